# ImageNet-1K classification, Vim-B (mmssm name vim_b, Vim arch 'base'; middle class token,
#   stride 16).
# Paper result: reported -- top-1 81.9 (98M params; FLOPs not reported; Vim README, ImageNet-1K
#   val).
# Official config: none published for Vim-B (no vim/scripts entry); vim/main.py defaults for
#   what the Ti/S scripts set (lr 5e-4 x batch / 512, drop path 0.1, wd 0.05) at the Ti
#   scripts' batch 128 x 8. Model
#   vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2.
# Official checkpoint: vim_b_midclstok_81p9acc.pth (HuggingFace hustvl/Vim-base-midclstok);
#   python tools/test.py configs/cls_vim_b_in1k.py vim_b_midclstok_81p9acc.pth
# Recipe: that of cls_vim_ti_in1k.py; differences here.
_base_ = ['./cls_vim_ti_in1k.py']

model = dict(backbone=dict(arch='base', drop_path_rate=0.1), head=dict(in_channels=768))

# wd 0.05 (main.py default)
optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
