# Semantic FPN 80k on ADE20K 512x512, backbone Vim-Ti (mmssm name vim_ti).
# Paper result: NOT REPORTED by the paper.
# Recipe: PVT's Semantic FPN recipe; backbone (with the wrapper's fpn adapters) and slide
# test as Vim's own UperNet setup.
_base_ = ['./_base_/fpn_pvt_80k_ade20k.py', './_base_/models/vim_ti_seg.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True),
    neck=dict(in_channels=[192, 192, 192, 192]),
    test_cfg=dict(mode='slide', crop_size={{_base_.crop_size}}, stride=(341, 341)))

find_unused_parameters = True  # norm_f is unused by mixer features
