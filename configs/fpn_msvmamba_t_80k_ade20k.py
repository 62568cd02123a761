# Semantic FPN 80k on ADE20K 512x512, backbone MSVMamba-Tiny (mmssm name msvmamba_t).
# Paper result: NOT REPORTED by the paper (no Semantic FPN config or result in the repository).
# Recipe: PVT's Semantic FPN recipe; backbone settings as MSVMamba's Tiny UperNet config.
_base_ = ['./_base_/fpn_pvt_80k_ade20k.py', './_base_/models/msvmamba_t.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384, 768]))
