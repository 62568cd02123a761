# ImageNet-1K classification, MobileMamba-B1 at 256x256 (mmssm name mobilemamba_b1,
#   MobileMamba arch 'b1').
# Paper result: reported -- top-1 79.9 (17.1M params, 1080M FLOPs at 256x256; MobileMamba
#   README, ImageNet-1K val).
# Official config: lewandofskee/MobileMamba configs/mobilemamba/mobilemamba_b1.py
# Official checkpoint: weights/MobileMamba_B1/mobilemamba_b1.pth (README, Google Drive);
#   python tools/test.py configs/cls_mobilemamba_b1_in1k.py mobilemamba_b1.pth
# Recipe: that of cls_mobilemamba_t2_in1k.py; differences here.
_base_ = ['./cls_mobilemamba_t2_in1k.py']

model = dict(backbone=dict(arch='b1', drop_path_rate=0.03), head=dict(in_channels=448))

# ------------------------------------------------------------------ data
# trained and evaluated at 256x256 (from scratch, no fine-tuning): test resize
# int(256 / 0.875) = 292
train_pipeline = _base_.train_pipeline
train_pipeline[1].scale = 256  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale, test_pipeline[2].crop_size = 292, 256  # ResizeEdge, CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
