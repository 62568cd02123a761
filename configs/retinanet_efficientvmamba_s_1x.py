# RetinaNet 1x on COCO, backbone EfficientVMamba-S (mmssm name efficientvmamba_s).
# Paper result: reported -- box AP 39.1 (paper Table 3, 19.0M params).
# Official config: none (the paper says it follows PVT: RetinaNet 1x, batch 16);
#   recipe of mmdet's pvt/retinanet_pvt-t_fpn_1x_coco.py (PVT's own).
_base_ = './retinanet_efficientvmamba_t_1x.py'

# the released checkpoint (dims 64, depths 2-2-4-2); the official config and the paper
# write dims 96, which cannot load the checkpoint.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Small/resolve/main/efficient_vmamba_small.ckpt'  # noqa: E501
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[128, 256, 512]))
