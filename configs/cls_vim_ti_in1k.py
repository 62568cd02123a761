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
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
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
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=192,
        # official: trunc-normal (std 0.02) weight, zero bias
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    # timm Mixup(mixup 0.8, cutmix 1.0, switch prob 0.5): one of the two per batch
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# ------------------------------------------------------------------ data
# DeiT: RandomResizedCrop 224 bicubic, flip, RandAugment rand-m9-mstd0.5-inc1, random
# erasing 0.25 'pixel' (colour jitter 0.3 is off when RandAugment is on), repeated
# augmentation (3 repeats). Evaluation: short side int(224 / 0.875) = 256 bicubic, center
# crop 224.
data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
# Total batch: 1024 = 128 images/GPU x 8 GPUs
train_dataloader = dict(
    batch_size=128,
    dataset=dict(pipeline=train_pipeline),
    sampler=dict(type='RepeatAugSampler', num_repeats=3, shuffle=True))
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# -------------------------------------------------------------- schedule
# timm cosine per epoch over 300 epochs after 5 linear warm-up epochs from 1e-6; min lr 1e-5
max_epochs = 300
warmup_epochs = 5
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs,
         end=max_epochs),
]

# ------------------------------------------------------------- optimizer
# AdamW lr 1e-3 (5e-4 x 1024 / 512), eps 1e-8, wd 0.1, no gradient clipping, fp32 (no AMP).
# timm's optimizer factory: no weight decay for 1-D parameters, biases, pos_embed and
# cls_token (A_log / A_b_log are 2-D and decayed).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
    clip_grad=None,
    paramwise_cfg=dict(
        flat_decay_mult=0.0,
        custom_keys={
            'backbone.pos_embed': dict(decay_mult=0.0),
            'backbone.cls_token': dict(decay_mult=0.0),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=1024)
# model EMA, decay 0.99996
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
