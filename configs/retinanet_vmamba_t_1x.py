# RetinaNet 1x on COCO, backbone VMamba-T[s1l8] (mmssm name vmamba_t).
# Paper result: NOT REPORTED by the paper (VMamba has no RetinaNet config or result).
# Recipe of the nearest sibling: EfficientVMamba (same code base), whose RetinaNet
# follows PVT's; backbone settings as VMamba's own detection configs.
_base_ = './_base_/retinanet_pvt_1x_coco.py'

# Official ImageNet-1K release (loaded through mmssm's VMamba converter).
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa: E501

# VMamba-T[s1l8]: see VMamba.arch_settings
# Stage 0 feeds no FPN level in RetinaNet (PVT layout: start_level=1 over four
# stages). Not returning it keeps its output norm out of the model, so DDP
# finds no unused parameters; the FPN below is the same network.
model = dict(
    backbone=dict(_delete_=True, type='mmssm.VMamba', arch='tiny_s1l8', out_indices=(1, 2, 3),
                  drop_path_rate=0.2,
                  # ImageNet checkpoint: its classifier is not used, the output norms are new
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_missing=['outnorm*'])),
    neck=dict(in_channels=[192, 384, 768]))
