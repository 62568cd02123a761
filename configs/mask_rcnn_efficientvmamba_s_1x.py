# Mask R-CNN 1x on COCO, backbone EfficientVMamba-S
# (mmssm name efficientvmamba_s, arch 'small').
# Paper result: reported -- box AP 39.3, mask AP 36.7 (paper Table 7: 31M params, 197G FLOPs).
# Official config: TerryPei/EfficientVMamba detection/configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_2242_96.py.
# Fixes over the official files: the backbone is the released checkpoint's architecture and
#   the FPN in_channels are its stage widths [64, 128, 256, 512] (the official T config inherits
#   [96, 192, 384, 768], an FPN shape error).
# Official detector checkpoints: not released.
_base_ = './_base_/mask_rcnn_swin_1x_coco.py'

# Official ImageNet-1K release (Hugging Face TerryPei/EfficientVMamba-*), loaded
# through mmssm's EfficientVMamba converter.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Small/resolve/main/efficient_vmamba_small.ckpt'  # noqa: E501

# the released checkpoint (dims 64, depths 2-2-4-2); the official config and
# the paper write dims 96, which cannot load the checkpoint.
# 0.2: the paper's detection drop path (T/S/B); the official configs get it from
# the Swin-T base config their backbone dict is merged into.
model = dict(
    backbone=dict(_delete_=True, type='mmssm.EfficientVMamba', arch='small',
                  out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
                  # ImageNet checkpoint: its classifier is not used, the output norms are new
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_missing=['outnorm*'])),
    neck=dict(in_channels=[64, 128, 256, 512]))
# AMP as in the official configs (AmpOptimWrapper).
optim_wrapper = dict(type='AmpOptimWrapper')
