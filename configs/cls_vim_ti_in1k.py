# ImageNet-1K classification, Vim-Ti (mmssm name vim_ti, Vim arch 'tiny'; middle class token,
#   stride 16).
# Paper result: reported -- top-1 76.1 (7M params; FLOPs not reported; Vim README, ImageNet-1K
#   val).
# Official config: hustvl/Vim vim/scripts/pt-vim-t.sh (vim/main.py: the DeiT recipe), model
#   vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2.
# Official checkpoint: vim_t_midclstok_76p1acc.pth (HuggingFace hustvl/Vim-tiny-midclstok);
#   evaluate it as it is (converted on the fly, with its classifier):
#   python tools/test.py configs/cls_vim_ti_in1k.py vim_t_midclstok_76p1acc.pth
# The official classifier reads the final-normed middle class token into a linear: the
# backbone's out_type='cls_token' and LinearClsHead here.
_base_ = ['./_base_/imagenet_swin_300e.py']

model = dict(
    backbone=dict(
        type='mmssm.Vim',
        # Vim-Ti: see Vim.arch_settings
        arch='tiny',
        img_size=224,
        with_cls_token=True,
        out_type='cls_token',
        out_indices=-1,
        drop_path_rate=0.0),
    neck=None,
    head=dict(in_channels=192))

# ------------------------------------------------------------------ data
# DeiT: the shared timm augmentations and evaluation at 224 (colour jitter 0.3 is off when
# RandAugment is on), with repeated augmentation (3 repeats).
train_dataloader = dict(sampler=dict(type='RepeatAugSampler', num_repeats=3, shuffle=True))

# -------------------------------------------------------------- schedule
# timm cosine per epoch over 300 epochs after 5 linear warm-up epochs from 1e-6; min lr 1e-5
warmup_epochs = 5
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs,
         end=_base_.max_epochs),
]

# ------------------------------------------------------------- optimizer
# AdamW lr 1e-3 (5e-4 x 1024 / 512), eps 1e-8, wd 0.1, no gradient clipping, fp32 (no AMP).
# timm's optimizer factory: no weight decay for 1-D parameters, biases, pos_embed and
# cls_token (A_log / A_b_log are 2-D and decayed).
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.1),
    clip_grad=None,
    paramwise_cfg=dict(custom_keys={
        'backbone.pos_embed': dict(decay_mult=0.0),
        'backbone.cls_token': dict(decay_mult=0.0),
    }))
# model EMA, decay 0.99996
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
