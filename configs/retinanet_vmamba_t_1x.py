# RetinaNet 1x on COCO, backbone VMamba-T[s1l8] (mmssm name vmamba_t).
# Paper result: NOT REPORTED by the paper (VMamba has no RetinaNet config or result).
# Recipe of the nearest sibling: EfficientVMamba (same code base), whose RetinaNet
# follows PVT's; backbone settings as VMamba's own detection configs.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

# Official ImageNet-1K release (loaded through mmssm's VMamba converter).
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa: E501

model = dict(
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=False,
        pad_size_divisor=32),
    backbone=dict(
        _delete_=True,  # replace the base backbone completely
        type='mmssm.VMamba',
        # VMamba-T[s1l8]: see VMamba.arch_settings
        arch='tiny_s1l8',
        # Stage 0 feeds no FPN level in RetinaNet (PVT layout: start_level=1 over four
        # stages). Not returning it keeps its output norm out of the model, so DDP
        # finds no unused parameters; the FPN below is the same network.
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='FPN', in_channels=[192, 384, 768], out_channels=256, start_level=0,
              add_extra_convs='on_input', num_outs=5))

# ------------------------------------------------------------------ data
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Total batch: 16 = 2 images/GPU x 8 GPUs
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# -------------------------------------------------------------- schedule
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]

# ------------------------------------------------------------- optimizer
# RetinaNet recipe of PVT (mmdet pvt/retinanet_pvt-t_fpn_1x_coco.py), which
# EfficientVMamba follows: AdamW lr 1e-4, weight decay 1e-4, no paramwise exclusions.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None,
    paramwise_cfg=dict())
auto_scale_lr = dict(enable=False, base_batch_size=16)
