# UperNet 60k on ADE20K 512x512, backbone Vim-Ti (mmssm name vim_ti).
# Paper result: reported -- mIoU SS 41.0 (paper; ~13M params). The number is not in the
#   repository and was most likely obtained from an unreleased backbone (see vim.md).
# Official config: hustvl/Vim seg/configs/vim/upernet/upernet_vim_tiny_24_512_slide_60k.py
#   + seg/scripts/ft_vim_tiny_upernet.sh overrides (lr 2e-4, weight decay 0.1, layer decay 0.92).
#   The official wrapper passes its arguments positionally and builds d_state 3 and an
#   80-channel patch conv; this config builds the intended model (d_state 16, RGB input).
# Official segmentor checkpoint: not released.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

# Released ImageNet-1K checkpoint (middle class token, no rope). The official
# segmentation runs used unreleased files (pretrained-vim-{t,s}.pth); mmssm drops the
# class token's position entry and resizes the 14x14 grid to 32x32 on load.
pretrained = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'  # noqa: E501

norm_cfg = dict(type='SyncBN', requires_grad=True)
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]

model = dict(
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    pretrained=None,  # the base's ResNet URL; weights come from backbone.init_cfg
    backbone=dict(
        _delete_=True,  # replace the base backbone completely
        type='mmssm.Vim',
        arch='tiny',
        img_size=512,
        out_indices=(5, 11, 17, 23),
        # the official wrapper deletes the class token (if_cls_token only
        # decides how the checkpoint is read)
        with_cls_token=False,
        # use_residual_as_feature=False: the blocks' mixer outputs
        feature_type='mixer',
        use_rope=False,
        rope_residual=False,
        residual_in_fp32=False,
        divide_out=True,
        # the wrapper's fpn1..fpn4 adapters: strides 4/8/16/32, E channels each
        with_fpn=True,
        fpn_norm='SyncBN',
        # VisionMambaSeg default (not overridden by the configs)
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # channels = E = 192 (official), not the base's 512
    decode_head=dict(
        type='UPerHead',
        in_channels=[192, 192, 192, 192],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=192,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=192,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# ------------------------------------------------------------------ data
# Total batch: 32 = 8 images/GPU x 4 GPUs (official: 4 GPUs x 8, fp32)
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=4, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# mIoU (MS): tools/test.py CONFIG CKPT --tta (tta_pipeline of mmseg's ade20k base: ratios
# 0.5-1.75 x {no flip, flip})

# -------------------------------------------------------------- schedule
train_cfg = dict(type='IterBasedTrainLoop', max_iters=60000, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-06, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=60000,
         by_epoch=False),
]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000))

# ------------------------------------------------------------- optimizer
# Official: LayerDecayOptimizerConstructor(num_layers=24, layer_decay_rate=0.92), the
# BEiT constructor. It assigns layer ids only to names starting with 'backbone.blocks'
# (ViT naming); Vim's blocks are 'backbone.layers.*', so in the official runs only
# pos_embed / patch_embed got the layer-0 scale 0.92**25 and everything else 1.0. This
# reproduces what the reported model trained with; for a real layer-wise decay use
# mmseg's LayerDecayOptimizerConstructor (decay_type='layer_wise_vit').
# No weight decay for 1-D parameters and biases; pos_embed (3-D) is decayed.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.1),
    clip_grad=None,
    paramwise_cfg=dict(
        flat_decay_mult=0.,  # no decay for 1-D parameters (norms, biases, D)
        custom_keys={
            'backbone.pos_embed': dict(lr_mult=0.92**25),
            'backbone.patch_embed.proj.weight': dict(lr_mult=0.92**25),
            'backbone.patch_embed.proj.bias': dict(lr_mult=0.92**25, decay_mult=0.),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=32)
find_unused_parameters = True  # as the official config (norm_f is unused)
