# Mask R-CNN 1x on COCO, backbone VMamba-B[s2l15]
# (mmssm name vmamba_b, VMamba arch 'base_s2l15').
# Paper result: reported -- box AP 49.2, mask AP 44.1 (108M params, 485G FLOPs;
#   VMamba README / assets/performance.md, COCO val2017).
# Official config: MzeroMiko/VMamba detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_base.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: mask_rcnn_vssm_fpn_coco_base_epoch_11.pth (GitHub release #v2det).
_base_ = './mask_rcnn_vmamba_t_1x.py'

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa: E501
# VMamba-B[s2l15]: see VMamba.arch_settings
model = dict(backbone=dict(arch='base_s2l15', drop_path_rate=0.6,
                           init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
