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
# trained and evaluated at 224x224 (from scratch, no fine-tuning): test resize
# int(224 / 0.875) = 256
train_pipeline = _base_.train_pipeline
train_pipeline[1].scale = 224  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale, test_pipeline[2].crop_size = 256, 224  # ResizeEdge, CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
