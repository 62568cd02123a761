# RetinaNet 1x on COCO, backbone Vim-Ti (mmssm name vim_ti).
# Paper result: NOT REPORTED by the paper.
# Recipe of the nearest sibling: EfficientVMamba's RetinaNet (PVT recipe); backbone and
# neck as Vim's own COCO setup (SimpleFPN, here strides 8-128 for RetinaNet).
_base_ = ['./_base_/retinanet_pvt_1x_coco.py', './_base_/models/vim_ti_vitdet.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True),
    # strides 8, 16, 32 (+ max-pooled strides 64, 128)
    neck=dict(_base_.pop('neck'), _delete_=True, scale_factors=(2.0, 1.0, 0.5)))
