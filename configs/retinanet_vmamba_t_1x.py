# RetinaNet 1x on COCO, backbone VMamba-T[s1l8] (mmssm name vmamba_t).
# Paper result: NOT REPORTED by the paper (VMamba has no RetinaNet config or result).
# Recipe of the nearest sibling: EfficientVMamba (same code base), whose RetinaNet
# follows PVT's; backbone settings as VMamba's own detection configs.
_base_ = ['./_base_/retinanet_pvt_1x_coco.py', './_base_/models/vmamba_t.py']

# Stage 0 feeds no FPN level in RetinaNet (PVT layout: start_level=1 over four
# stages). Not returning it keeps its output norm out of the model, so DDP
# finds no unused parameters; the FPN below is the same network.
model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, out_indices=(1, 2, 3), drop_path_rate=0.2),
    neck=dict(in_channels=[192, 384, 768]))
