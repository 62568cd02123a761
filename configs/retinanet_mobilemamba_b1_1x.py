# RetinaNet 1x on COCO, backbone MobileMamba-B1 (mmssm name mobilemamba_b1).
# Paper result: reported -- box AP 39.6 (README: 27.1M params, 151G FLOPs; the log says APm 43.1).
# Official config: lewandofskee/MobileMamba downstream/det/configs/retinanet/retinanet_mobilemamba_b1_fpn_1x_coco.py
# Official detector checkpoint: weights/downstream/det/retinanet.pth (README Google Drive).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

# Official ImageNet-1K checkpoint (README Google Drive, non-distilled), converted on the
# fly by mmssm's MobileMamba converter.
pretrained = 'mobilemamba_b1.pth'

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
        type='mmssm.MobileMamba',
        # MobileMamba-B1: embed dims 200/376/448, depths 2-3-2 (stride 16/32/64)
        arch='b1',
        # stem (0, C1 @ 16), blocks1 (1, C1 @ 16), blocks2 (2, C2 @ 32), blocks3 (3, C3 @ 64)
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,
        # the B-architecture value used by every official downstream config
        drop_path_rate=0.03,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='mmssm.EfficientViTFPN',
        in_channels=[200, 376, 448],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5,  # 1 transposed-conv level (stride 8) + 3 backbone levels + 1 extra (128)
        num_extra_trans_convs=1))

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
# Total batch: 16 = 4 images/GPU x 4 GPUs (official: 4 A100s)
train_dataloader = dict(
    batch_size=4,
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
    dict(type='LinearLR', start_factor=1e-05, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=6, end=max_epochs, T_max=max_epochs - 6,
         by_epoch=True, eta_min=0.0),
]

# ------------------------------------------------------------- optimizer
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={'norm': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)
