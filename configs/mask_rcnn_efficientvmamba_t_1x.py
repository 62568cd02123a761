# Mask R-CNN 1x on COCO, backbone EfficientVMamba-T
# (mmssm name efficientvmamba_t, arch 'tiny').
# Paper result: reported -- box AP 35.6, mask AP 33.2 (paper Table 7: 11M params, 60G FLOPs).
#   Note: the paper's 11M / 60G for T cannot be a standard Mask R-CNN (the backbone
#   alone is ~16G at 1280x800); this config builds the standard model (~26M).
# Official config: TerryPei/EfficientVMamba detection/configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_2242_48.py.
# Fixes over the official files: the backbone is the released checkpoint's architecture and
#   the FPN in_channels are its stage widths [48, 96, 192, 384] (the official T config inherits
#   [96, 192, 384, 768], an FPN shape error).
# Official detector checkpoints: not released.
_base_ = './mask_rcnn_efficientvmamba_s_1x.py'

pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Tiny/resolve/main/efficient_vmamba_tiny.ckpt'  # noqa: E501
# the released checkpoint (dims 48, depths 2-2-4-2); the official config writes depths
# 2-2-9-2, which loads the checkpoint only partially.
model = dict(backbone=dict(arch='tiny', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[48, 96, 192, 384]))
# Total batch: 16 = 4 images/GPU x 4 GPUs (official T config: "as gpus=4")
train_dataloader = dict(batch_size=4)
