# Mask R-CNN 1x on COCO, backbone Vim-Ti (mmssm name vim_ti).
# Paper result: NOT REPORTED by the paper (Vim reports ViTDet Cascade Mask R-CNN only).
# Recipe of the nearest sibling: VMamba's Mask R-CNN 1x (Swin recipe); backbone and
# neck as Vim's own COCO setup (one stride-16 map -> mmssm.SimpleFPN).
_base_ = ['./_base_/mask_rcnn_swin_1x_coco.py', './_base_/models/vim_ti_vitdet.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True),
    neck=dict(_base_.pop('neck'), _delete_=True))
