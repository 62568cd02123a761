# Mask R-CNN 1x on COCO, backbone MobileMamba-B1 (mmssm name mobilemamba_b1).
# Paper result: reported -- box AP 40.6, mask AP 37.4 (README: 38.0M params, 178G FLOPs).
# Official config: lewandofskee/MobileMamba downstream/det/configs/mask_rcnn/mask-rcnn_mobilemamba_b1_fpn_1x_coco.py
#   (EfficientViT-style: transposed-conv FPN recovers strides 4 and 8 from the stride-16 stem).
# Official detector checkpoint: weights/downstream/det/maskrcnn.pth (README Google Drive).
_base_ = ['./_base_/mask_rcnn_swin_1x_coco.py', './_base_/models/mobilemamba_b1.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, norm_eval=True),
    neck=dict(
        _delete_=True,
        type='mmssm.EfficientViTFPN',
        in_channels=[200, 376, 448],
        out_channels=256,
        start_level=0,
        num_outs=5,  # 2 transposed-conv levels (strides 4, 8) + 3 backbone levels
        num_extra_trans_convs=2))

# Total batch: 16 = 4 images/GPU x 4 GPUs (official: 4 A100s)
train_dataloader = dict(batch_size=4)

# The official MobileMamba schedule and optimizer: linear warm-up, cosine from epoch 6,
# AdamW 2e-4 with gradient clipping. 'norm' only matches the SS2D out_norm parameters;
# the backbone's BatchNorms (named bn/bn1/bn2) are decayed, as in the official setup.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-05, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=6, end=12, T_max=6, by_epoch=True, eta_min=0.0),
]
optim_wrapper = dict(
    optimizer=dict(lr=2e-4),
    clip_grad=dict(_delete_=True, max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys=dict(_delete_=True, norm=dict(decay_mult=0.))))
