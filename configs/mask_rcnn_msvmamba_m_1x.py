# Mask R-CNN 1x on COCO, backbone MSVMamba-Micro
# (mmssm name msvmamba_m, MSVMamba arch 'micro').
# Paper result: reported -- box AP 43.8, mask AP 39.9 (32M params, 201G FLOPs;
#   MSVMamba README, COCO val2017).
# Official config: YuHengsss/MSVMamba detection/configs/ms_vssm/mask_rcnn_ms_vssm_fpn_coco_micro.py
#   (inherits mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py).
# Official detector checkpoint: README Google Drive 'log&ckpt' folder (file name not
#   recorded in the repository).
# Batch: the official setup trains 4 images/GPU x 8 GPUs = 32 (the repository's modified
#   coco_instance.py) while each config keeps "batch_size=2  # as gpus=8" and lr 1e-4 of
#   the Swin recipe; we use the intended 2 x 8 = 16.
_base_ = './mask_rcnn_msvmamba_t_1x.py'

pretrained = 'vssm_micro_ms_e300.pth'
model = dict(backbone=dict(arch='micro', init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[64, 128, 256, 512]))
