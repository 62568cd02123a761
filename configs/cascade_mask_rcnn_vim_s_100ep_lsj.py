# Cascade Mask R-CNN (ViTDet style, LSJ 1024, 100 epochs) on COCO, backbone Vim-S
# (mmssm name vim_s).
# Paper result: NOT REPORTED by the paper (the official Vim-S config exists; only Vim-Ti
#   has COCO numbers).
# Official config: hustvl/Vim det/projects/ViTDet/configs/COCO/cascade_mask_rcnn_vimdet_s_100ep.py
#   (detectron2). Ported to mmdet: backbone -> one stride-16 map, mmssm.SimpleFPN (ViTDet
#   simple feature pyramid, LN), RPN with 2 convs, 4conv1fc box heads with LN, class-agnostic
#   cascade (IoU 0.5/0.6/0.7), LN in the mask head, square padding to 1024.
# Official detector checkpoint: not released.
_base_ = './cascade_mask_rcnn_vim_ti_100ep_lsj.py'

# Released ImageNet-1K checkpoint (middle class token, no rope). The official
# detection runs used unreleased files (Ti: a v1 rope / no-cls-token checkpoint);
# mmssm drops the class token's position entry and resizes the grid to 64x64 on load.
pretrained = 'https://huggingface.co/hustvl/Vim-small-midclstok/resolve/main/vim_s_midclstok_80p5acc.pth'  # noqa: E501
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=384))
