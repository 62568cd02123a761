# Demo: Semantic FPN + MSVMamba from scratch on the embedded shapes data set
# (data/demo/ade, tools/make_demo_data.py; 4 classes after reduce_zero_label).
# configs/fpn_msvmamba_t_80k_ade20k.py at a CPU-demo size: small explicit MSVMamba
# arch, thin FPN/head, BN instead of SyncBN, 96x128 crops, short schedule.
#   python tools/train.py configs/demo/fpn_msvmamba_demo.py
_base_ = ['../fpn_msvmamba_t_80k_ade20k.py']

data_root = 'data/demo/ade/'
classes = ('background', 'circle', 'square', 'triangle')
metainfo = dict(classes=classes,
                palette=[[120, 120, 120], [220, 60, 50], [60, 170, 70], [60, 90, 220]])
img_scale = (160, 120)  # (w, h): the images' own size
crop_size = (96, 128)  # (h, w)
max_iters = 300
fpn_channels = 64
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, dims=32, depths=(1, 1, 2, 1)),
                  drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=fpn_channels),
    decode_head=dict(in_channels=[fpn_channels] * 4, channels=32,
                     num_classes=len(classes), norm_cfg=norm_cfg))

# the inherited ADE20K pipelines at the demo images' size
train_pipeline = _base_.train_pipeline
train_pipeline[2].update(scale=img_scale, ratio_range=(0.75, 1.5))  # RandomResize
train_pipeline[3].update(crop_size=crop_size, cat_max_ratio=0.9)  # RandomCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale = img_scale  # Resize
dataset_common = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                      img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, pipeline=train_pipeline, **dataset_common,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, pipeline=test_pipeline, **dataset_common,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=30, end=max_iters, by_epoch=False),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=False)
