# ImageNet-1K classification, MobileMamba-T2 at 192x192 (mmssm name mobilemamba_t2,
#   MobileMamba arch 't2').
# Paper result: reported -- top-1 73.6 (8.8M params, 255M FLOPs at 192x192; MobileMamba README
#   test command / training log, ImageNet-1K val; the README table's 71.5 contradicts both).
# Official config: lewandofskee/MobileMamba configs/mobilemamba/mobilemamba_t2.py
# Official checkpoint: weights/MobileMamba_T2/mobilemamba_t2.pth (README, Google Drive);
#   evaluate it as it is (converted on the fly, with its classifier; --cfg-options
#   load_from_key=net_E for the EMA weights the numbers were measured with):
#   python tools/test.py configs/cls_mobilemamba_t2_in1k.py mobilemamba_t2.pth
# The official classifier is average pool -> BN_Linear: GlobalAveragePooling and
# MobileMambaClsHead here. The knowledge-distilled "dagger" checkpoints (mobilemamba_t2s.pth,
# ..., 1000 epochs, soft KD from TResNet-L-v2) have the same architecture and evaluate with
# the same config; mmssm does not implement their distillation training.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmssm.MobileMamba',
        # MobileMamba-T2: see MobileMamba.arch_settings
        arch='t2',
        out_indices=(3, ),  # blocks3
        drop_path_rate=0.0),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='mmssm.MobileMambaClsHead',
        num_classes=1000,
        in_channels=368,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    # timm Mixup(mixup 0.8, cutmix 1.0, switch prob 0.5): one of the two per batch
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# ------------------------------------------------------------------ data
# timm create_transform: RandomResizedCrop at the model's resolution, flip, RandAugment
# rand-m9-mstd0.5-inc1, random erasing 0.25 'pixel' (colour jitter 0.4 is off when
# RandAugment is on). The official crop interpolation is 'random' (bilinear or bicubic per
# image), which mmpretrain's RandomResizedCrop cannot express: bicubic here.
# Evaluation: short side int(size / 0.875) bicubic, center crop size.
data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]
img_size = 192
test_resize = 219  # int(192 / 0.875)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=test_resize, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
# Total batch: 1024 = 128 images/GPU x 8 GPUs
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=125, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# -------------------------------------------------------------- schedule
# 300 epochs, 20 warm-up epochs from lr / 1000, cosine per iteration to lr / 100
max_epochs = 300
warmup_epochs = 20
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=3e-5, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]

# ------------------------------------------------------------- optimizer
# AdamW lr 3e-3 (1.5e-3 x 1024 / 512), eps 1e-8, wd 0.05, grad-norm clip 5, AMP; no weight
# decay for 1-D parameters and biases (optim/__init__.py add_weight_decay).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    loss_scale='dynamic',
    paramwise_cfg=dict(flat_decay_mult=0.0))
auto_scale_lr = dict(enable=False, base_batch_size=1024)
# model EMA, decay 0.9998 (the reported numbers are the EMA model's)
custom_hooks = [dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL')]
