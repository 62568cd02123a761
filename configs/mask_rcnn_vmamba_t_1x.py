# Mask R-CNN 1x on COCO, backbone VMamba-T[s1l8]
# (mmssm name vmamba_t, VMamba arch 'tiny_s1l8').
# Paper result: reported -- box AP 47.3, mask AP 42.7 (50M params, 271G FLOPs;
#   VMamba README / assets/performance.md, COCO val2017).
# Official config: MzeroMiko/VMamba detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_tiny.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: mask_rcnn_vssm_fpn_coco_tiny_s_epoch_12.pth (GitHub release #v2det).
_base_ = ['./_base_/mask_rcnn_swin_1x_coco.py', './_base_/models/vmamba_t.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384, 768]))
# Total batch: 16 = 2 images/GPU x 8 GPUs (modelcard.sh trains on 8 GPUs)

# mmssm names these LayerNorms '*.norm*'; the official modules are Sequential indices
# (patch_embed.2/.7, downsample.3), which the recipe's 'norm' key does not match: they were
# decayed in the official runs. Longer keys win.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'backbone.patch_embed.norm': dict(decay_mult=1.), 'downsample.norm': dict(decay_mult=1.)}))
