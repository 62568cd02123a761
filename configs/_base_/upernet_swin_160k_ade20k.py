# UperNet 160k on ADE20K with the Swin recipe (mmseg swin/swin-*-patch4-window7-in1k-pre_
# upernet_8xb2-160k_ade20k-512x512.py) that the VMamba-family segmentation configs inherit:
# the shared recipe of the model-zoo configs, not a model of its own -- each config
# replaces the backbone (model.backbone with _delete_=True) and sets the heads' in_channels.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    './ade20k_512x512.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
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
    decode_head=dict(
        type='UPerHead',
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    test_cfg=dict(mode='whole'))

# ------------------------------------------------------------------ data
# Total batch: 16 = 2 images/GPU x 8 GPUs (the Swin base config's 2/GPU; the file names' '4xb4' is also 16)
train_dataloader = dict(batch_size=2)

# -------------------------------------------------------------- schedule
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-06, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
         by_epoch=False),
]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000))

# ------------------------------------------------------------- optimizer
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
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
