# Mask R-CNN 1x on COCO, backbone Vanilla-VMamba-S (v0)
# (mmssm name vmamba_v0_s, VMamba arch 'v0_small').
# Paper result: reported -- box AP 48.2, mask AP 43.0 (64M params, 400G FLOPs;
#   VMamba README / assets/performance.md, COCO val2017).
# Official config: MzeroMiko/VMamba detection/configs/vssm/mask_rcnn_vssm_fpn_coco_small.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: vssmsmall_mask_rcnn_swin_fpn_coco_epoch_12.pth (GitHub release #v0det).
_base_ = './mask_rcnn_vmamba_v0_t_1x.py'

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmsmall_dp03_ckpt_epoch_238.pth'  # noqa: E501
# Vanilla-VMamba-S (v0): see VMamba.arch_settings
model = dict(backbone=dict(arch='v0_small', init_cfg=dict(checkpoint=pretrained)))
