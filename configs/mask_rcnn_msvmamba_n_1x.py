# Mask R-CNN 1x on COCO, backbone MSVMamba-Nano
# (mmssm name msvmamba_n, MSVMamba arch 'nano').
# Paper result: NOT REPORTED by the paper (the official config exists, the README
#   reports no Nano detection result).
# Official config: YuHengsss/MSVMamba detection/configs/ms_vssm/mask_rcnn_ms_vssm_fpn_coco_nano.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: README Google Drive 'log&ckpt' folder (file name not
#   recorded in the repository).
# Batch: the official setup trains 4 images/GPU x 8 GPUs = 32 (the repository's modified
#   coco_instance.py) while each config keeps "batch_size=2  # as gpus=8" and lr 1e-4 of
#   the Swin recipe; we use the intended 2 x 8 = 16.
_base_ = './mask_rcnn_msvmamba_t_1x.py'

pretrained = 'vssm_nano_ms_e300.pth'
model = dict(backbone=dict(arch='nano', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[48, 96, 192, 384]))
