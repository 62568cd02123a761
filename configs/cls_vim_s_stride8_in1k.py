# ImageNet-1K classification, Vim-S+ (mmssm name vim_s_stride8, Vim arch 'small_stride8';
#   patch 16 at stride 8, 27x27 tokens + the middle class token).
# Paper result: reported -- top-1 81.6 (26M params; FLOPs not reported; Vim README, ImageNet-1K
#   val).
# Official config: hustvl/Vim vim/scripts/ft-vim-s.sh: 30 epochs of fine-tuning of the
#   stride-16 Vim-S at stride 8, model
#   vim_small_patch16_stride8_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2.
# Official checkpoint: vim_s_midclstok_ft_81p6acc.pth (HuggingFace hustvl/Vim-small-midclstok);
#   python tools/test.py configs/cls_vim_s_stride8_in1k.py vim_s_midclstok_ft_81p6acc.pth
# Recipe: that of cls_vim_ti_stride8_in1k.py (same fine-tuning script); differences here.
_base_ = ['./cls_vim_ti_stride8_in1k.py']

model = dict(backbone=dict(arch='small_stride8'), head=dict(in_channels=384))
load_from = 'vim_s_midclstok_80p5acc.pth'
