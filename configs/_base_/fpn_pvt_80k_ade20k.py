# Semantic FPN 80k on ADE20K with the PVT recipe (whai362/PVT segmentation configs; the
# standard one for hierarchical transformer backbones): the shared recipe of the model-zoo
# configs, not a model of its own -- each config replaces the backbone (model.backbone with
# _delete_=True) and sets the FPN in_channels.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    './ade20k_512x512.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size={{_base_.crop_size}}),
    pretrained=None,  # the base's ResNet URL; weights come from backbone.init_cfg
    neck=dict(type='FPN', out_channels=256, num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    test_cfg=dict(mode='whole'))

# ------------------------------------------------------------------ data
# Total batch: 16 = 4 images/GPU x 4 GPUs
train_dataloader = dict(batch_size=4)

# -------------------------------------------------------------- schedule
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000, by_epoch=False),
]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000))

# ------------------------------------------------------------- optimizer
# Semantic FPN recipe of PVT (whai362/PVT segmentation configs; the standard one for
# hierarchical transformer backbones): AdamW lr 1e-4, weight decay 1e-4, poly (power 0.9)
# decay to 0, 80k iterations at batch 16 (PVT ran 40k at batch 32 and lr 2e-4).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None,
    paramwise_cfg=dict())
auto_scale_lr = dict(enable=False, base_batch_size=16)
