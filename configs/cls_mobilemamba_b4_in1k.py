# ImageNet-1K classification, MobileMamba-B4 at 512x512 (mmssm name mobilemamba_b4,
#   MobileMamba arch 'b4').
# Paper result: reported -- top-1 82.5 (17.1M params, 4313M FLOPs at 512x512; MobileMamba
#   README, ImageNet-1K val).
# Official config: lewandofskee/MobileMamba configs/mobilemamba/mobilemamba_b4.py
# Official checkpoint: weights/MobileMamba_B4/mobilemamba_b4.pth (README, Google Drive);
#   python tools/test.py configs/cls_mobilemamba_b4_in1k.py mobilemamba_b4.pth
# Recipe: that of cls_mobilemamba_b1_in1k.py; differences here.
_base_ = ['./cls_mobilemamba_b1_in1k.py']

model = dict(backbone=dict(arch='b4'))

# ------------------------------------------------------------------ data
# trained and evaluated at 512x512 (from scratch, no fine-tuning): test resize
# int(512 / 0.875) = 585
train_pipeline = _base_.train_pipeline
train_pipeline[1].scale = 512  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale, test_pipeline[2].crop_size = 585, 512  # ResizeEdge, CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
