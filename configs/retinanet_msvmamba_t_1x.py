# RetinaNet 1x on COCO, backbone MSVMamba-Tiny (mmssm name msvmamba_t).
# Paper result: NOT REPORTED by the paper (no RetinaNet config or result in the repository).
# Recipe of the nearest sibling: EfficientVMamba's RetinaNet (PVT recipe); backbone
# settings as MSVMamba's own detection configs.
_base_ = ['./_base_/retinanet_pvt_1x_coco.py', './_base_/models/msvmamba_t.py']

# Stage 0 feeds no FPN level in RetinaNet (PVT layout: start_level=1 over four
# stages). Not returning it keeps its output norm out of the model, so DDP
# finds no unused parameters; the FPN below is the same network.
model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, out_indices=(1, 2, 3), drop_path_rate=0.2),
    neck=dict(in_channels=[192, 384, 768]))
