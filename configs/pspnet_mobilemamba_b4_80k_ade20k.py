# PSPNet 80k on ADE20K 512x512, backbone MobileMamba-B4 (mmssm name mobilemamba_b4).
# Paper result: reported -- mIoU 36.9 (aAcc 76.2, mAcc 47.9; README: 20.5M params, 4.5G FLOPs), single scale.
# Official config: lewandofskee/MobileMamba downstream/seg/configs/pspnet/pspnet_mobilemamba_b4-80k_ade20k-512x512.py
# Official segmentor checkpoint: weights/downstream/seg/pspnet.pth (README Google Drive).
_base_ = './deeplabv3_mobilemamba_b4_80k_ade20k.py'

# The DeepLabv3 sibling with the PSP head of the official config (same backbone, auxiliary
# head, data, schedule and optimizer).
model = dict(
    decode_head=dict(
        _delete_=True,
        type='PSPHead',
        in_channels=448,
        in_index=2,  # the stride-64 map of blocks3
        channels=256,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
# Total batch: 32 = 8 images/GPU x 4 GPUs (official: 4 A100s)
