# Demo: Mask R-CNN + MSVMamba trained from scratch on the embedded shapes data set
# (data/demo/coco, written by tools/make_demo_data.py: 3 classes circle/square/triangle,
# 160x120 images). `make demo` / `python tools/demo.py` trains and evaluates it on a CPU
# in a few minutes. The recipe is configs/mask_rcnn_msvmamba_n_1x.py with a smaller
# MSVMamba (explicit arch dict), thinner FPN/heads, native image scale, no pretrained
# weights (none can be downloaded offline) and a short iteration-based schedule.
_base_ = ['../mask_rcnn_msvmamba_n_1x.py']

data_root = 'data/demo/coco/'
classes = ('circle', 'square', 'triangle')
metainfo = dict(classes=classes, palette=[(220, 60, 50), (60, 170, 70), (60, 90, 220)])
img_scale = (160, 120)  # (w, h): the images' own size
max_iters = 300
fpn_channels = 64

model = dict(
    backbone=dict(
        # MSVMamba's block and multi-scale scan, at a CPU-demo size.
        arch=dict(_delete_=True, dims=32, depths=(1, 1, 2, 1)),
        drop_path_rate=0.0,
        init_cfg=None),  # from scratch
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        # a fixed 2x2 sampling grid per bin: mmcv's adaptive default is slow on CPU
        bbox_roi_extractor=dict(out_channels=fpn_channels,
                                roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=fpn_channels,
                                roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(num_convs=2, in_channels=fpn_channels,
                       conv_out_channels=fpn_channels, num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# The data set of the zoo config, pointed at the demo images (2-core CPU: loading in the
# main process is cheapest and deterministic).
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(min_size=8), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
                     metric=['bbox', 'segm'], format_only=False)
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters,
         T_max=max_iters - 30, eta_min=2e-5),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(_delete_=True, max_norm=10.0, norm_type=2))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)  # logged loss = mean of the last 10
randomness = dict(seed=0, deterministic=False)
env_cfg = dict(cudnn_benchmark=False)
