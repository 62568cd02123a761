# Mask R-CNN 1x on COCO, backbone Vanilla-VMamba-T (v0)
# (mmssm name vmamba_v0_t, VMamba arch 'v0_tiny').
# Paper result: reported -- box AP 46.5, mask AP 42.1 (42M params, 286G FLOPs;
#   VMamba README / assets/performance.md, COCO val2017).
# Official config: MzeroMiko/VMamba detection/configs/vssm/mask_rcnn_vssm_fpn_coco_tiny.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: vssmtiny_mask_rcnn_swin_fpn_coco_epoch_12.pth (GitHub release #v0det).
_base_ = ['./_base_/mask_rcnn_swin_1x_coco.py', './_base_/models/vmamba_v0_t.py']

# 0.2: what the official v0 detection configs really train with (not set by
# them; inherited from the Swin-T base config, since their backbone dict
# is merged into the Swin one). The classification yaml value differs.
model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384, 768]))
# Total batch: 16 = 2 images/GPU x 8 GPUs (modelcard.sh trains on 8 GPUs)

# mmssm names the stem LayerNorm 'patch_embed.norm'; the official module is the Sequential
# index patch_embed.2, which the recipe's 'norm' key does not match: it was decayed in the
# official runs. Longer keys win.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'backbone.patch_embed.norm': dict(decay_mult=1.)}))
