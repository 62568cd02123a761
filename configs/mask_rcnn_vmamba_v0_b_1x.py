# Mask R-CNN 1x on COCO, backbone Vanilla-VMamba-B (v0)
# (mmssm name vmamba_v0_b, VMamba arch 'v0_base').
# Paper result: reported -- box AP 48.6, mask AP 43.3 (96M params, 540G FLOPs;
#   VMamba README / assets/performance.md, COCO val2017).
# Official config: MzeroMiko/VMamba detection/configs/vssm/mask_rcnn_vssm_fpn_coco_base.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: vssmbase_mask_rcnn_swin_fpn_coco_epoch_12.pth (GitHub release #v0det).
_base_ = './mask_rcnn_vmamba_v0_t_1x.py'

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmbase_dp06_ckpt_epoch_241.pth'  # noqa: E501
# Vanilla-VMamba-B (v0): see VMamba.arch_settings
model = dict(backbone=dict(arch='v0_base', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
