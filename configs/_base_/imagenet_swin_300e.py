# ImageNet-1K classification, 300 epochs, with the Swin recipe (timm augmentations, mixup /
# cutmix, label smoothing, AdamW + cosine, model EMA) that VMamba's classification/config.py
# defaults state and that MSVMamba, EfficientVMamba, MobileMamba and Vim (DeiT's, the same
# augmentations) vary: the shared recipe of the cls_* configs, not a model of its own --
# each family's first classifier adds its backbone and the head's in_channels and states
# where its recipe differs.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        # official: trunc-normal (std 0.02) weight, zero bias
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    # timm Mixup(mixup 0.8, cutmix 1.0, switch prob 0.5): one of the two per batch
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
    # No model-level init_cfg: the backbone initialises itself as the official model does
    # (trunc-normal linears, unit norms, the SSM's dt/A/D initialisation).
)

# ------------------------------------------------------------------ data
# timm create_transform as the official build_transform calls it: RandomResizedCrop 224
# bicubic, flip, RandAugment rand-m9-mstd0.5-inc1 (timm_increasing), random erasing 0.25
# ('pixel' mode = per-pixel random values); colour jitter is off when RandAugment is on.
# Evaluation: resize the short side to 256 (= 224 / 0.875) bicubic, center crop 224.
# A classifier at another resolution sets the three sizes of these pipelines (indices 1
# of train_pipeline, 1 and 2 of test_pipeline) through _base_ and restates the loaders.
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
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# -------------------------------------------------------------- schedule
# 300 epochs, 20 warm-up epochs; cosine per iteration; base lr 5e-4, warm-up lr 5e-7 and
# min lr 5e-6, all scaled by total batch / 512 (x2 at 1024).
max_epochs = 300
warmup_epochs = 20
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]

# ------------------------------------------------------------- optimizer
# AdamW lr 1e-3 (5e-4 x 1024 / 512), wd 0.05, grad-norm clip 5. No weight decay for 1-D
# parameters (norms, biases, Ds); the 2-D A_logs / dt_projs_bias are decayed (the official
# optimizer ignores the _no_weight_decay marks).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(flat_decay_mult=0.0))
auto_scale_lr = dict(enable=False, base_batch_size=1024)
# model EMA, decay 0.9999
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
