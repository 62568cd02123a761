# ImageNet-1K classification, Vim-Ti+ (mmssm name vim_ti_stride8, Vim arch 'tiny_stride8';
#   patch 16 at stride 8, 27x27 tokens + the middle class token).
# Paper result: reported -- top-1 78.3 (7M params; FLOPs not reported; Vim README, ImageNet-1K
#   val).
# Official config: hustvl/Vim vim/scripts/ft-vim-t.sh: 30 epochs of fine-tuning of the
#   stride-16 Vim-Ti at stride 8, model
#   vim_tiny_patch16_stride8_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2.
# Official checkpoint: vim_t_midclstok_ft_78p3acc.pth (HuggingFace hustvl/Vim-tiny-midclstok);
#   python tools/test.py configs/cls_vim_ti_stride8_in1k.py vim_t_midclstok_ft_78p3acc.pth
# Recipe: that of cls_vim_ti_in1k.py; differences here.
_base_ = ['./cls_vim_ti_in1k.py']

model = dict(backbone=dict(arch='tiny_stride8', drop_path_rate=0.0))

# Fine-tuning starts from the stride-16 classifier (official --finetune): its 14x14 position
# embedding is resized to 27x27 on load (mmssm keeps every entry with its patch; the
# official loader shifts the middle-class-token grid by one, see docs/vim.md).
load_from = 'vim_t_midclstok_76p1acc.pth'

# -------------------------------------------------------------- schedule
# 30 epochs; lr 5e-6 x 1024 / 512 = 1e-5, warm-up lr 1e-5 and min lr 1e-5 (unscaled): a
# constant 1e-5 after 5 warm-up epochs that start at 1e-5.
max_epochs = 30
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0, by_epoch=True, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=max_epochs),
]
# wd 1e-8
optim_wrapper = dict(optimizer=dict(lr=1e-5, weight_decay=1e-8))
