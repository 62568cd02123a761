# Mask R-CNN 1x on COCO, backbone VMamba-S[s2l15]
# (mmssm name vmamba_s, VMamba arch 'small_s2l15').
# Paper result: reported -- box AP 48.7, mask AP 43.7 (70M params, 384G FLOPs;
#   VMamba README / assets/performance.md, COCO val2017).
# Official config: MzeroMiko/VMamba detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_small.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: mask_rcnn_vssm_fpn_coco_small_epoch_11.pth (GitHub release #v2det).
_base_ = './mask_rcnn_vmamba_t_1x.py'

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa: E501
# VMamba-S[s2l15]: see VMamba.arch_settings
model = dict(backbone=dict(arch='small_s2l15', drop_path_rate=0.3,
                           init_cfg=dict(checkpoint=pretrained)))
