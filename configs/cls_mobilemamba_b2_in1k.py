# ImageNet-1K classification, MobileMamba-B2 at 384x384 (mmssm name mobilemamba_b2,
#   MobileMamba arch 'b2').
# Paper result: reported -- top-1 81.6 (17.1M params, 2427M FLOPs at 384x384; MobileMamba
#   README, ImageNet-1K val).
# Official config: lewandofskee/MobileMamba configs/mobilemamba/mobilemamba_b2.py
# Official checkpoint: weights/MobileMamba_B2/mobilemamba_b2.pth (README, Google Drive);
#   python tools/test.py configs/cls_mobilemamba_b2_in1k.py mobilemamba_b2.pth
# Recipe: that of cls_mobilemamba_b1_in1k.py; differences here.
_base_ = ['./cls_mobilemamba_b1_in1k.py']

model = dict(backbone=dict(arch='b2'))

# ------------------------------------------------------------------ data
# trained and evaluated at 384x384 (from scratch, no fine-tuning); test resize
# int(384 / 0.875) = 438
bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
img_size = 384
test_resize = 438
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
