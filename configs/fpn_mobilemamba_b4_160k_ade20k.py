# Semantic FPN 160k on ADE20K 512x512, backbone MobileMamba-B4 (mmssm name mobilemamba_b4).
# Paper result: reported -- mIoU 42.5 (aAcc 79.9, mAcc 53.7; README: 19.8M params, 5.6G FLOPs).
# Official config: lewandofskee/MobileMamba downstream/seg/configs/sem_fpn/fpn_mobilemamba_b4-160k_ade20k-512x512.py
# Official segmentor checkpoint: weights/downstream/seg/fpn.pth (README Google Drive).
_base_ = ['./_base_/fpn_pvt_80k_ade20k.py', './_base_/models/mobilemamba_b4.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, norm_eval=False),
    neck=dict(in_channels=[200, 376, 448], num_outs=3),
    decode_head=dict(in_channels=[256, 256, 256], in_index=[0, 1, 2],
                     feature_strides=[16, 32, 64]))

# Total batch: 32 = 8 images/GPU x 4 GPUs (official: 4 V100s)
train_dataloader = dict(batch_size=8)

# The official MobileMamba segmentation schedule and optimizer: 160k iterations, warm-up,
# cosine over the second half; AdamW 1.2e-4 / weight decay 0.05, head lr x10.
train_cfg = dict(max_iters=160000, val_interval=16000)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-06, by_epoch=False, begin=0, end=1500),
    dict(type='CosineAnnealingLR', begin=80000, end=160000, T_max=80000,
         by_epoch=False, eta_min=0.0),
]
default_hooks = dict(checkpoint=dict(interval=16000))
optim_wrapper = dict(
    optimizer=dict(lr=1.2e-4, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'head': dict(lr_mult=10.),
        'norm': dict(decay_mult=0.),
        'pos_block': dict(decay_mult=0.),
    }))
auto_scale_lr = dict(base_batch_size=32)
