# Demo: RetinaNet + MSVMamba from scratch on the embedded shapes data set (data/demo/coco,
# tools/make_demo_data.py). configs/retinanet_msvmamba_t_1x.py at a CPU-demo size: small
# explicit MSVMamba arch, thin FPN/head, native 160x120 images, short iteration schedule.
#   python tools/train.py configs/demo/retinanet_msvmamba_demo.py
_base_ = ['../retinanet_msvmamba_t_1x.py']

data_root = 'data/demo/coco/'
classes = ('circle', 'square', 'triangle')
metainfo = dict(classes=classes, palette=[(220, 60, 50), (60, 170, 70), (60, 90, 220)])
img_scale = (160, 120)  # (w, h): the images' own size
max_iters = 300
fpn_channels = 64

model = dict(
    # Stages 1-3 only (P3-P7 come from them): with stage 0 in out_indices its output
    # norm would get no gradient (FPN start_level=1), which DistributedDataParallel
    # rejects.
    backbone=dict(arch=dict(_delete_=True, dims=32, depths=(1, 1, 2, 1)),
                  out_indices=(1, 2, 3), drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256], start_level=0, out_channels=fpn_channels),
    bbox_head=dict(num_classes=len(classes), in_channels=fpn_channels,
                   feat_channels=fpn_channels, stacked_convs=2),
    test_cfg=dict(nms_pre=300, max_per_img=20))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
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
                     metric='bbox', format_only=False)
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters,
         T_max=max_iters - 30, eta_min=2e-5),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3),
                     clip_grad=dict(_delete_=True, max_norm=10.0, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)  # logged loss = mean of the last 10
randomness = dict(seed=0, deterministic=False)
