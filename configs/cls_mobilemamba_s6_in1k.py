# ImageNet-1K classification, MobileMamba-S6 at 224x224 (mmssm name mobilemamba_s6,
#   MobileMamba arch 's6').
# Paper result: reported -- top-1 78.0 (15.0M params, 652M FLOPs at 224x224; MobileMamba
#   README, ImageNet-1K val).
# Official config: lewandofskee/MobileMamba configs/mobilemamba/mobilemamba_s6.py
# Official checkpoint: weights/MobileMamba_S6/mobilemamba_s6.pth (README, Google Drive);
#   python tools/test.py configs/cls_mobilemamba_s6_in1k.py mobilemamba_s6.pth
# Recipe: that of cls_mobilemamba_t2_in1k.py; differences here.
_base_ = ['./cls_mobilemamba_t2_in1k.py']

model = dict(backbone=dict(arch='s6', drop_path_rate=0.0), head=dict(in_channels=448))

# ------------------------------------------------------------------ data
# trained and evaluated at 224x224 (from scratch, no fine-tuning); test resize
# int(224 / 0.875) = 256
bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
img_size = 224
test_resize = 256
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
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
