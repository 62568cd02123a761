# Mask R-CNN 1x on COCO, backbone EfficientVMamba-B
# (mmssm name efficientvmamba_b, arch 'base').
# Paper result: reported -- box AP 43.7, mask AP 40.2 (paper Table 7: 53M params, 252G FLOPs).
# Official config: none for this variant/schedule; recipe of the T/S 1x configs (..._2242_48.py / ..._2242_96.py).
# Fixes over the official files: the backbone is the released checkpoint's architecture and
#   the FPN in_channels are its stage widths [96, 192, 384, 768] (the official T config inherits
#   [96, 192, 384, 768], an FPN shape error).
# Official detector checkpoints: not released.
_base_ = './mask_rcnn_efficientvmamba_s_1x.py'

pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Base/resolve/main/efficient_vmamba_base.ckpt'  # noqa: E501
model = dict(backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 384, 768]))
