# Mask R-CNN 3x + multi-scale on COCO, backbone EfficientVMamba-S
# (mmssm name efficientvmamba_s, arch 'small').
# Paper result: reported -- box AP 41.6, mask AP 38.2 (paper Table 7: 31M params, 197G FLOPs).
# Official config: none for this variant/schedule; recipe of the B 3x config mask_rcnn_vssm_fpn_coco_efficient_2292_96.py.
# Fixes over the official files: the backbone is the released checkpoint's architecture and
#   the FPN in_channels are its stage widths [64, 128, 256, 512] (the official T config inherits
#   [96, 192, 384, 768], an FPN shape error).
# Official detector checkpoints: not released.
_base_ = './mask_rcnn_efficientvmamba_t_3x_ms.py'

pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Small/resolve/main/efficient_vmamba_small.ckpt'  # noqa: E501
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[64, 128, 256, 512]))
