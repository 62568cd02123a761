# PSPNet 80k on ADE20K 512x512, backbone MobileMamba-B4 (mmssm name mobilemamba_b4).
# Paper result: reported -- mIoU 36.9 (aAcc 76.2, mAcc 47.9; README: 20.5M params, 4.5G FLOPs), single scale.
# Official config: lewandofskee/MobileMamba downstream/seg/configs/pspnet/pspnet_mobilemamba_b4-80k_ade20k-512x512.py
# Official segmentor checkpoint: weights/downstream/seg/pspnet.pth (README Google Drive).
_base_ = [
    'mmseg::_base_/models/pspnet_r50-d8.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

# Official ImageNet-1K checkpoint (README Google Drive, non-distilled), converted on the
# fly by mmssm's MobileMamba converter.
pretrained = 'mobilemamba_b4.pth'

norm_cfg = dict(type='SyncBN', requires_grad=True)
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]

model = dict(
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    pretrained=None,  # the base's ResNet URL; weights come from backbone.init_cfg
    backbone=dict(
        _delete_=True,  # replace the base backbone completely
        type='mmssm.MobileMamba',
        # MobileMamba-B4: embed dims 200/376/448, depths 2-3-2 (stride 16/32/64)
        arch='b4',
        # stem (0, C1 @ 16), blocks1 (1, C1 @ 16), blocks2 (2, C2 @ 32), blocks3 (3, C3 @ 64)
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        # the B-architecture value used by every official downstream config
        drop_path_rate=0.03,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        type='PSPHead',
        in_channels=448,
        in_index=2,  # the stride-64 map of blocks3
        channels=256,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=376,
        in_index=1,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    test_cfg=dict(mode='whole'))

# ------------------------------------------------------------------ data
# Total batch: 32 = 8 images/GPU x 4 GPUs (official: 4 A100s)
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=4, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# mIoU (MS): tools/test.py CONFIG CKPT --tta (tta_pipeline of mmseg's ade20k base: ratios
# 0.5-1.75 x {no flip, flip})

# -------------------------------------------------------------- schedule
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-05, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=40000, end=80000, T_max=40000,
         by_epoch=False, eta_min=0.0),
]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000))

# ------------------------------------------------------------- optimizer
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={'norm': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=32)
