# DeepLabv3 80k on ADE20K 512x512, backbone MobileMamba-B4 (mmssm name mobilemamba_b4).
# Paper result: reported -- mIoU 36.6 (aAcc 76.3, mAcc 47.1; README: 23.4M params, 4.7G FLOPs), single scale.
# Official config: lewandofskee/MobileMamba downstream/seg/configs/deeplabv3/deeplabv3_mobilemamba_b4-80k_ade20k-512x512.py
# Official segmentor checkpoint: weights/downstream/seg/deeplabv3.pth (README Google Drive).
_base_ = [
    'mmseg::_base_/models/deeplabv3_r50-d8.py',
    './_base_/ade20k_512x512.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
    './_base_/models/mobilemamba_b4.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size={{_base_.crop_size}}),
    pretrained=None,  # the base's ResNet URL; weights come from backbone.init_cfg
    backbone=dict(_base_.pop('backbone'), _delete_=True, norm_eval=False),
    decode_head=dict(
        type='ASPPHead',
        in_channels=448,
        in_index=2,  # the stride-64 map of blocks3
        channels=256,
        dilations=(1, 12, 24, 36),
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
# Total batch: 32 = 8 images/GPU x 4 GPUs (official: 4 V100s)
train_dataloader = dict(batch_size=8)

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
