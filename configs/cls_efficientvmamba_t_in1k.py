# ImageNet-1K classification, EfficientVMamba-T (mmssm name efficientvmamba_t,
#   EfficientVMamba arch 'tiny').
# Paper result: reported -- top-1 76.5 (6M params, 0.8G FLOPs at 224x224; EfficientVMamba
#   README / paper, ImageNet-1K val).
# Official config: TerryPei/EfficientVMamba classification/configs/vssm/vssm_efficient_tiny.yaml;
#   recipe from the shipped training log classification/logs/log_efficient_vmamba_tiny.txt
#   (its timm-style lib/ trainer, 16 GPUs).
# Official checkpoint: efficient_vmamba_tiny.ckpt (HuggingFace TerryPei/EfficientVMamba-Tiny);
#   evaluate it as it is (converted on the fly, with its classifier):
#   python tools/test.py configs/cls_efficientvmamba_t_in1k.py efficient_vmamba_tiny.ckpt
# The official classifier is norm -> average pool -> linear on the last stage: the
# backbone's out-norm of stage 3, GlobalAveragePooling and LinearClsHead here.
_base_ = ['./_base_/imagenet_swin_300e.py']

model = dict(
    backbone=dict(
        type='mmssm.EfficientVMamba',
        # EfficientVMamba-T: see EfficientVMamba.arch_settings
        arch='tiny',
        out_indices=(3, ),  # its out-norm is the official classifier.norm
        # the training logs' value (the yaml files say 0.2)
        drop_path_rate=0.1),
    head=dict(in_channels=384),
    # mixup 0.2, cutmix 1.0 (switch prob 0.5), label smoothing 0.1
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.2), dict(type='CutMix', alpha=1.0)]))

# ------------------------------------------------------------------ data
# timm create_transform: RandomResizedCrop 224 bicubic, flip, RandAugment 'rand-m9-mstd0.5'
# (timm's plain policy set: no 'inc1', so Posterize/Solarize/colour magnitudes are not
# "increasing"; spelled out below), random erasing 0.25 'pixel'; colour jitter 0.3 is off
# when RandAugment is on. Evaluation: short side 256 bicubic, center crop 224
# (lib/dataset/transform.py), as in the shared recipe.
# timm _RAND_TRANSFORMS with their level -> argument maps (enhance factor 0.1 .. 1.9)
timm_rand_policies = [
    dict(type='AutoContrast'),
    dict(type='Equalize'),
    dict(type='Invert'),
    dict(type='Rotate', magnitude_range=(0, 30)),
    dict(type='Posterize', magnitude_range=(0, 4)),
    dict(type='Solarize', magnitude_range=(0, 256)),
    dict(type='SolarizeAdd', magnitude_range=(0, 110)),
    dict(type='ColorTransform', magnitude_range=(-0.9, 0.9), random_negative_prob=0.0),
    dict(type='Contrast', magnitude_range=(-0.9, 0.9), random_negative_prob=0.0),
    dict(type='Brightness', magnitude_range=(-0.9, 0.9), random_negative_prob=0.0),
    dict(type='Sharpness', magnitude_range=(-0.9, 0.9), random_negative_prob=0.0),
    dict(type='Shear', magnitude_range=(0, 0.3), direction='horizontal'),
    dict(type='Shear', magnitude_range=(0, 0.3), direction='vertical'),
    dict(type='Translate', magnitude_range=(0, 0.45), direction='horizontal'),
    dict(type='Translate', magnitude_range=(0, 0.45), direction='vertical'),
]
train_pipeline = _base_.train_pipeline
train_pipeline[3].policies = timm_rand_policies  # RandAugment
# Total batch: 2048 = 128 images/GPU x 16 GPUs
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))

# -------------------------------------------------------------- schedule
# 300 epochs, 20 warm-up epochs from 1e-7, cosine to 1e-6 (lr 2e-3 is not rescaled)
param_scheduler = _base_.param_scheduler
param_scheduler[0].start_factor = 5e-5
param_scheduler[1].eta_min = 1e-6

# ------------------------------------------------------------- optimizer
# AdamW lr 2e-3, eps 1e-8, wd 0.04, grad-norm clip 1.0, AMP; no weight decay for 1-D
# parameters and biases (lib/utils/optim.py).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(lr=2e-3, weight_decay=0.04),
    clip_grad=dict(max_norm=1.0),
    loss_scale='dynamic')
auto_scale_lr = dict(base_batch_size=2048)
