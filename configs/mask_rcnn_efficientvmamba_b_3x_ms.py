# Mask R-CNN 3x + multi-scale on COCO, backbone EfficientVMamba-B
# (mmssm name efficientvmamba_b, arch 'base').
# Paper result: reported -- box AP 45.0, mask AP 40.8 (paper Table 7: 53M params, 252G FLOPs).
# Official config: TerryPei/EfficientVMamba detection/configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_2292_96.py.
# Fixes over the official files: the backbone is the released checkpoint's architecture and
#   the FPN in_channels are its stage widths [96, 192, 384, 768] (the official T config inherits
#   [96, 192, 384, 768], an FPN shape error).
# Official detector checkpoints: not released.
_base_ = './mask_rcnn_efficientvmamba_t_3x_ms.py'

pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Base/resolve/main/efficient_vmamba_base.ckpt'  # noqa: E501
model = dict(backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 384, 768]))
