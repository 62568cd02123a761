# Demo: SSDLite + MobileMamba from scratch on the embedded shapes data set (data/demo/coco,
# tools/make_demo_data.py). configs/ssdlite_mobilemamba_b1_320_coco.py at a CPU-demo size:
# small explicit MobileMamba arch and SSD neck, 3 classes, short iteration schedule. The
# 320x320 input and anchors are kept (the 160x120 images are resized to it).
#   python tools/train.py configs/demo/ssdlite_mobilemamba_demo.py
# Known upstream bug: mmdet 3.3.0's SSDHead cannot predict (validation/test raise
# "'SSDHead' object has no attribute 'loss_cls'", open-mmlab/mmdetection#11780, fix in the
# unmerged #11524); training works. Train without validation until it is shimmed:
#   --cfg-options val_cfg=None val_dataloader=None val_evaluator=None
_base_ = ['../ssdlite_mobilemamba_b1_320_coco.py']

data_root = 'data/demo/coco/'
classes = ('circle', 'square', 'triangle')
metainfo = dict(classes=classes, palette=[(220, 60, 50), (60, 170, 70), (60, 90, 220)])
input_size = 320
max_iters = 300
dims = [64, 96, 128]
neck_channels = (dims[0], dims[1], 128, 64, 64, 32)

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=dims, depths=[1, 1, 1]),
        drop_path_rate=0.0,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=(dims[0], dims[1]), out_channels=neck_channels),
    bbox_head=dict(in_channels=neck_channels, num_classes=len(classes)),
    test_cfg=dict(nms_pre=300, max_per_img=20))

# the inherited pipelines; the small demo images are expanded at most 2x
train_pipeline = _base_.train_pipeline
train_pipeline[2].ratio_range = (1, 2)  # Expand
test_pipeline = _base_.test_pipeline
# The demo images instead of the zoo config's repeated COCO (2-core CPU: loading in the
# main process is cheapest and deterministic).
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=8), pipeline=train_pipeline))
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
optim_wrapper = dict(optimizer=dict(lr=2e-3),
                     clip_grad=dict(max_norm=10.0))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)  # logged loss = mean of the last 10
randomness = dict(seed=0, deterministic=False)
env_cfg = dict(cudnn_benchmark=False)
# out_indices (1, 2) leave MobileMamba's last stage without gradient; DDP must know.
find_unused_parameters = True
