# Semantic FPN 80k on ADE20K 512x512, backbone VMamba-T[s1l8] (mmssm name vmamba_t).
# Paper result: NOT REPORTED by the paper (VMamba has no Semantic FPN config or result).
# Recipe: PVT's Semantic FPN recipe (see the optimizer comment); backbone settings as
# VMamba's own segmentation configs.
_base_ = ['./_base_/fpn_pvt_80k_ade20k.py', './_base_/models/vmamba_t.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384, 768]))
