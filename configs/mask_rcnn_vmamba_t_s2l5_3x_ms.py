# Mask R-CNN 3x + multi-scale on COCO, backbone VMamba-T[s2l5]
# (mmssm name vmamba_t_s2l5, VMamba arch 'tiny_s2l5').
# Paper result: reported -- box AP 48.9, mask AP 43.7 (50M params, 270G FLOPs;
#   VMamba README / assets/performance.md, COCO val2017).
# Official config: MzeroMiko/VMamba detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_tiny1_ms_3x.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: mask_rcnn_vssm_fpn_coco_tiny_ms_3x_epoch_36.pth (GitHub release #v2det).
_base_ = './mask_rcnn_vmamba_t_3x_ms.py'

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_tiny_0230_ckpt_epoch_262.pth'  # noqa: E501
# VMamba-T[s2l5]: see VMamba.arch_settings
model = dict(backbone=dict(arch='tiny_s2l5', init_cfg=dict(checkpoint=pretrained)))
