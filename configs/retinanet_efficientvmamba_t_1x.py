# RetinaNet 1x on COCO, backbone EfficientVMamba-T (mmssm name efficientvmamba_t).
# Paper result: reported -- box AP 37.5 (paper Table 3, 13.0M params).
# Official config: none (the paper says it follows PVT: RetinaNet 1x, batch 16);
#   recipe of mmdet's pvt/retinanet_pvt-t_fpn_1x_coco.py (PVT's own).
_base_ = ['./_base_/retinanet_pvt_1x_coco.py', './_base_/models/efficientvmamba_t.py']

# Stage 0 feeds no FPN level in RetinaNet (PVT layout: start_level=1 over four
# stages). Not returning it keeps its output norm out of the model, so DDP
# finds no unused parameters; the FPN below is the same network.
# 0.2: the paper's detection drop path.
model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, out_indices=(1, 2, 3), drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384]))
