# RetinaNet 1x on COCO, backbone EfficientVMamba-T (mmssm name efficientvmamba_t).
# Paper result: reported -- box AP 37.5 (paper Table 3, 13.0M params).
# Official config: none (the paper says it follows PVT: RetinaNet 1x, batch 16);
#   recipe of mmdet's pvt/retinanet_pvt-t_fpn_1x_coco.py (PVT's own).
_base_ = './_base_/retinanet_pvt_1x_coco.py'

# Official ImageNet-1K release (Hugging Face TerryPei/EfficientVMamba-*), loaded
# through mmssm's EfficientVMamba converter.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Tiny/resolve/main/efficient_vmamba_tiny.ckpt'  # noqa: E501

# the released checkpoint (dims 48, depths 2-2-4-2); the official config
# writes depths 2-2-9-2, which loads the checkpoint only partially.
# Stage 0 feeds no FPN level in RetinaNet (PVT layout: start_level=1 over four
# stages). Not returning it keeps its output norm out of the model, so DDP
# finds no unused parameters; the FPN below is the same network.
# 0.2: the paper's detection drop path.
model = dict(
    backbone=dict(_delete_=True, type='mmssm.EfficientVMamba', arch='tiny',
                  out_indices=(1, 2, 3), drop_path_rate=0.2,
                  # ImageNet checkpoint: its classifier is not used, the output norms are new
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_missing=['outnorm*'])),
    neck=dict(in_channels=[96, 192, 384]))
