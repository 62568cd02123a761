# RetinaNet 1x on COCO, backbone MobileMamba-B1 (mmssm name mobilemamba_b1).
# Paper result: reported -- box AP 39.6 (README: 27.1M params, 151G FLOPs; the log says APm 43.1).
# Official config: lewandofskee/MobileMamba downstream/det/configs/retinanet/retinanet_mobilemamba_b1_fpn_1x_coco.py
# Official detector checkpoint: weights/downstream/det/retinanet.pth (README Google Drive).
_base_ = ['./_base_/retinanet_pvt_1x_coco.py', './_base_/models/mobilemamba_b1.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, norm_eval=True),
    neck=dict(
        _delete_=True,
        type='mmssm.EfficientViTFPN',
        in_channels=[200, 376, 448],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5,  # 1 transposed-conv level (stride 8) + 3 backbone levels + 1 extra (128)
        num_extra_trans_convs=1))

# Total batch: 16 = 4 images/GPU x 4 GPUs (official: 4 A100s)
train_dataloader = dict(batch_size=4)

# The official MobileMamba schedule and optimizer (as in mask_rcnn_mobilemamba_b1_1x.py):
# linear warm-up, cosine from epoch 6, AdamW 2e-4 / weight decay 0.05 with gradient
# clipping; 'norm' only matches the SS2D out_norm parameters.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-05, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=6, end=12, T_max=6, by_epoch=True, eta_min=0.0),
]
optim_wrapper = dict(
    optimizer=dict(lr=2e-4, weight_decay=0.05),
    clip_grad=dict(_delete_=True, max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
