# Demo: an MSVMamba classifier from scratch on the embedded ImageNet-layout shapes set
# (data/demo/imagenet, tools/make_demo_data.py: 3 classes, 64x64 images).
# configs/cls_msvmamba_n_in1k.py at a CPU-demo size: small explicit MSVMamba arch, the
# images' own resolution, light augmentation, no mixup/EMA, short iteration schedule.
#   python tools/train.py configs/demo/cls_msvmamba_demo.py
#   python tools/test.py configs/demo/cls_msvmamba_demo.py work_dirs/cls_msvmamba_demo/iter_60.pth
_base_ = ['../cls_msvmamba_n_in1k.py']

data_root = 'data/demo/imagenet'
classes = ('circle', 'square', 'triangle')
img_size = 64
max_iters = 60

model = dict(
    backbone=dict(arch=dict(_delete_=True, dims=16, depths=(1, 1, 1, 1)),
                  drop_path_rate=0.0, init_cfg=None),
    head=dict(num_classes=len(classes), in_channels=128,
              loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(_delete_=True))  # no mixup / cutmix
data_preprocessor = dict(num_classes=len(classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.6, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
dataset = dict(type='ImageNet', data_root=data_root, metainfo=dict(classes=classes))
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=10, end=max_iters,
         eta_min=1e-4),
]
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.05))
custom_hooks = []
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)
randomness = dict(seed=0, deterministic=False)
