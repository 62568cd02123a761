# Cascade Mask R-CNN (ViTDet style, LSJ 1024, 100 epochs) on COCO, backbone Vim-Ti
# (mmssm name vim_ti).
# Paper result: reported -- box AP 45.7, mask AP 39.2 (paper; not in the repository).
# Official config: hustvl/Vim det/projects/ViTDet/configs/COCO/cascade_mask_rcnn_vimdet_t_100ep_adj1.py
#   (detectron2). Ported to mmdet: backbone -> one stride-16 map, mmssm.SimpleFPN (ViTDet
#   simple feature pyramid, LN), RPN with 2 convs, 4conv1fc box heads with LN, class-agnostic
#   cascade (IoU 0.5/0.6/0.7), LN in the mask head, square padding to 1024.
# Official detector checkpoint: not released.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/models/vim_ti_vitdet.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

image_size = (1024, 1024)
# channel LayerNorm for the head convs (detectron2 "LN"), mmpretrain's LN2d
head_norm = dict(type='mmpretrain.LN2d', eps=1e-6, requires_grad=True)
model = dict(
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32,
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(_base_.pop('backbone'), _delete_=True),
    neck=dict(_base_.pop('neck'), _delete_=True),  # P2-P5 + LastLevelMaxPool P6
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        # the three cascade stages differ only in the box coder's target stds
        bbox_head=[
            dict(
                type='Shared4Conv1FCBBoxHead',
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=80,
                norm_cfg=head_norm,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=stds),
                reg_class_agnostic=True,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                         [0.033, 0.033, 0.067, 0.067])
        ],
        mask_head=dict(norm_cfg=head_norm)),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=1000)))

# ------------------------------------------------------------------ data
backend_args = None
# Large-scale jitter (detectron2: flip, ResizeScale 0.1-2.0, FixedSizeCrop 1024).
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
# Test: longest edge 1024, padded to a 1024x1024 square (detectron2 square_pad).
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    # Pad with the mean colour (BGR, as loaded): after normalisation that is 0, which is
    # what detectron2 pads with (training's BatchFixedSizePad pads the normalised image
    # with 0 too).
    dict(type='Pad', size=image_size, pad_val=dict(img=(104, 116, 124))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Total batch: 64 = 4 images/GPU x 16 GPUs (detectron2 fixes only the total, 64)
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# -------------------------------------------------------------- schedule
# 184,375 iterations at batch 64 = 100 epochs; lr x0.1 at 163,889 and 177,546.
max_iters = 184375
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=20000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
         milestones=[163889, 177546], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=20000, max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)

# ------------------------------------------------------------- optimizer
# detectron2 get_vim_lr_decay_rate: pos_embed / patch_embed -> layer 0, backbone.layers.i ->
# i + 1, everything else 25; lr scale = rate ** (25 - id), rate 0.837. Weight decay 0 only
# for torch norm modules (norm_decay_mult: the LN2d/LN of neck and heads) and pos_embed;
# Vim's RMSNorm weights, A_log, D and biases are decayed.
layer_decay_rate = 0.837
vim_layer_keys = {f'backbone.layers.{i}.': dict(lr_mult=layer_decay_rate**(24 - i))
                  for i in range(24)}
vim_layer_keys.update({
    'backbone.pos_embed': dict(lr_mult=layer_decay_rate**25, decay_mult=0.),
    'backbone.patch_embed': dict(lr_mult=layer_decay_rate**25),
})
optim_wrapper = dict(
    type='AmpOptimWrapper',  # AMP as in the official runs
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    clip_grad=None,
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys=vim_layer_keys))
auto_scale_lr = dict(enable=False, base_batch_size=64)
