# Mask R-CNN 1x on COCO, backbone MSVMamba-Nano
# (mmssm name msvmamba_n, MSVMamba arch 'nano').
# Paper result: NOT REPORTED by the paper (the official config exists, the README
#   reports no Nano detection result).
# Official config: YuHengsss/MSVMamba detection/configs/ms_vssm/mask_rcnn_ms_vssm_fpn_coco_nano.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: README Google Drive 'log&ckpt' folder (file name not
#   recorded in the repository).
# Batch: the official setup trains 4 images/GPU x 8 GPUs = 32 (the repository's modified
#   coco_instance.py) while each config keeps "batch_size=2  # as gpus=8" and lr 1e-4 of
#   the Swin recipe; we use the intended 2 x 8 = 16.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

# Official ImageNet-1K checkpoint (README Google Drive 'log&ckpt' folder; the name
# the official configs use). Converted on the fly by mmssm's MSVMamba converter.
pretrained = 'vssm_nano_ms_e300.pth'

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
        type='mmssm.MSVMamba',
        arch='nano',
        out_indices=(0, 1, 2, 3),
        # 0.2: what every official MSVMamba detection config really trains with (not set
        # by them; inherited from the Swin-T base config their backbone dict is merged into).
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='FPN', in_channels=[48, 96, 192, 384], out_channels=256, num_outs=5))

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
        }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
