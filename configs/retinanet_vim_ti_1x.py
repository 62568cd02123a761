# RetinaNet 1x on COCO, backbone Vim-Ti (mmssm name vim_ti).
# Paper result: NOT REPORTED by the paper.
# Recipe of the nearest sibling: EfficientVMamba's RetinaNet (PVT recipe); backbone and
# neck as Vim's own COCO setup (SimpleFPN, here strides 8-128 for RetinaNet).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

# Released ImageNet-1K checkpoint (middle class token, no rope). The official
# detection runs used unreleased files (Ti: a v1 rope / no-cls-token checkpoint);
# mmssm drops the class token's position entry and resizes the grid to 64x64 on load.
pretrained = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'  # noqa: E501

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
        type='mmssm.Vim',
        arch='tiny',
        # position embedding grid 64x64 (ViTDet input); other sizes interpolate
        img_size=1024,
        out_indices=(23, ),
        with_cls_token=False,
        feature_type='residual',
        # last_layer_process='add': last residual stream, no final norm
        last_feature='residual',
        use_rope=True,
        rope_residual=True,
        rope_pretrain_grid=14,
        residual_in_fp32=True,
        divide_out=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='mmssm.SimpleFPN',
        in_channels=192,
        out_channels=256,
        scale_factors=(2.0, 1.0, 0.5),  # strides 8, 16, 32
        num_outs=5,  # + max-pooled strides 64, 128
        norm_cfg=dict(type='LN')))

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
