# RetinaNet 1x on COCO, backbone EfficientVMamba-B (mmssm name efficientvmamba_b).
# Paper result: reported -- box AP 42.8 (paper Table 3, 44.0M params).
# Official config: none (the paper says it follows PVT: RetinaNet 1x, batch 16);
#   recipe of mmdet's pvt/retinanet_pvt-t_fpn_1x_coco.py (PVT's own).
_base_ = './retinanet_efficientvmamba_t_1x.py'

pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Base/resolve/main/efficient_vmamba_base.ckpt'  # noqa: E501
model = dict(backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[192, 384, 768]))
