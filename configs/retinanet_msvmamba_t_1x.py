# RetinaNet 1x on COCO, backbone MSVMamba-Tiny (mmssm name msvmamba_t).
# Paper result: NOT REPORTED by the paper (no RetinaNet config or result in the repository).
# Recipe of the nearest sibling: EfficientVMamba's RetinaNet (PVT recipe); backbone
# settings as MSVMamba's own detection configs.
_base_ = './_base_/retinanet_pvt_1x_coco.py'

# Official ImageNet-1K checkpoint (README Google Drive 'log&ckpt' folder; the name
# the official configs use). Converted on the fly by mmssm's MSVMamba converter.
pretrained = 'vssm_tiny_ms_e300.pth'

# Stage 0 feeds no FPN level in RetinaNet (PVT layout: start_level=1 over four
# stages). Not returning it keeps its output norm out of the model, so DDP
# finds no unused parameters; the FPN below is the same network.
model = dict(
    backbone=dict(_delete_=True, type='mmssm.MSVMamba', arch='tiny', out_indices=(1, 2, 3),
                  drop_path_rate=0.2,
                  # ImageNet checkpoint: its classifier is not used, the output norms are new
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_missing=['outnorm*'])),
    neck=dict(in_channels=[192, 384, 768]))
