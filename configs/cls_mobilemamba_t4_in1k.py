# ImageNet-1K classification, MobileMamba-T4 at 192x192 (mmssm name mobilemamba_t4,
#   MobileMamba arch 't4').
# Paper result: reported -- top-1 76.1 (14.2M params, 413M FLOPs at 192x192; MobileMamba
#   README, ImageNet-1K val).
# Official config: lewandofskee/MobileMamba configs/mobilemamba/mobilemamba_t4.py
# Official checkpoint: weights/MobileMamba_T4/mobilemamba_t4.pth (README, Google Drive);
#   python tools/test.py configs/cls_mobilemamba_t4_in1k.py mobilemamba_t4.pth
# Recipe: that of cls_mobilemamba_t2_in1k.py; differences here.
_base_ = ['./cls_mobilemamba_t2_in1k.py']

model = dict(backbone=dict(arch='t4', drop_path_rate=0.0), head=dict(in_channels=448))
