# Mask R-CNN 1x on COCO, backbone Vanilla-VMamba-T (v0)
# (mmssm name vmamba_v0_t, VMamba arch 'v0_tiny').
# Paper result: reported -- box AP 46.5, mask AP 42.1 (42M params, 286G FLOPs;
#   VMamba README / assets/performance.md, COCO val2017).
# Official config: MzeroMiko/VMamba detection/configs/vssm/mask_rcnn_vssm_fpn_coco_tiny.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: vssmtiny_mask_rcnn_swin_fpn_coco_epoch_12.pth (GitHub release #v0det).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

# Official ImageNet-1K release (loaded through mmssm's VMamba converter).
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth'  # noqa: E501

model = dict(
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32),
    backbone=dict(
        _delete_=True,  # replace the base backbone completely
        type='mmssm.VMamba',
        # Vanilla-VMamba-T (v0): see VMamba.arch_settings
        arch='v0_tiny',
        out_indices=(0, 1, 2, 3),
        # 0.2: what the official v0 detection configs really train with (not set by
        # them; inherited from the Swin-T base config, since their backbone dict
        # is merged into the Swin one). The classification yaml value differs.
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='FPN', in_channels=[96, 192, 384, 768], out_channels=256, num_outs=5))

# ------------------------------------------------------------------ data
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Total batch: 16 = 2 images/GPU x 8 GPUs (modelcard.sh trains on 8 GPUs)
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
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]

# ------------------------------------------------------------- optimizer
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=None,
    paramwise_cfg=dict(
        custom_keys={
            # Swin's recipe. mmengine matches keys as substrings of the full parameter
            # name: every parameter whose name contains 'norm' gets no weight decay.
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            # mmssm names these LayerNorms '*.norm*'; the official modules are Sequential
            # indices (patch_embed.2/.7, downsample.3), which the 'norm' key does not
            # match: they were decayed in the official runs. Longer keys win.
            'backbone.patch_embed.norm': dict(decay_mult=1.),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
