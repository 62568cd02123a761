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
# trained and evaluated at 384x384 (from scratch, no fine-tuning): test resize
# int(384 / 0.875) = 438
train_pipeline = _base_.train_pipeline
train_pipeline[1].scale = 384  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale, test_pipeline[2].crop_size = 438, 384  # ResizeEdge, CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
