# UperNet 160k on ADE20K 512x512, backbone EfficientVMamba-T (mmssm name efficientvmamba_t).
# Paper result: reported -- mIoU SS 38.9, MS 39.3 (paper Table 4: 14M params, 230G FLOPs).
# Official config: none (never committed); the paper says "aligned with VMamba": the
#   Swin UperNet recipe (AdamW 6e-5, 160k iterations, batch 16, 512x512).
_base_ = ['./_base_/upernet_swin_160k_ade20k.py', './_base_/models/efficientvmamba_t.py']

# 0.2: the paper gives no segmentation drop path; its detection value.
model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.2),
    decode_head=dict(in_channels=[48, 96, 192, 384], channels=256),
    auxiliary_head=dict(in_channels=192))
