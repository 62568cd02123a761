# ImageNet-1K classification, Vim-S (mmssm name vim_s, Vim arch 'small'; middle class token,
#   stride 16).
# Paper result: reported -- top-1 80.5 (26M params; FLOPs not reported; Vim README, ImageNet-1K
#   val).
# Official config: hustvl/Vim vim/scripts/pt-vim-s.sh, model
#   vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2.
# Official checkpoint: vim_s_midclstok_80p5acc.pth (HuggingFace hustvl/Vim-small-midclstok);
#   python tools/test.py configs/cls_vim_s_in1k.py vim_s_midclstok_80p5acc.pth
# Recipe: that of cls_vim_ti_in1k.py; differences here.
_base_ = ['./cls_vim_ti_in1k.py']

model = dict(backbone=dict(arch='small', drop_path_rate=0.05), head=dict(in_channels=384))

# Total batch: 512 = 64 images/GPU x 8 GPUs
train_dataloader = dict(batch_size=64)
# lr 1e-3 x 512 / 512, wd 0.05
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05))
auto_scale_lr = dict(base_batch_size=512)
