# Semantic FPN 80k on ADE20K 512x512, backbone EfficientVMamba-T (mmssm name efficientvmamba_t).
# Paper result: NOT REPORTED by the paper (no Semantic FPN result).
# Recipe: PVT's Semantic FPN recipe (EfficientVMamba follows PVT for RetinaNet).
_base_ = ['./_base_/fpn_pvt_80k_ade20k.py', './_base_/models/efficientvmamba_t.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.2),
    neck=dict(in_channels=[48, 96, 192, 384]))
