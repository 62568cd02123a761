# Semantic FPN 80k on ADE20K 512x512, backbone VMamba-T[s1l8] (mmssm name vmamba_t).
# Paper result: NOT REPORTED by the paper (VMamba has no Semantic FPN config or result).
# Recipe: PVT's Semantic FPN recipe (see the optimizer comment); backbone settings as
# VMamba's own segmentation configs.
_base_ = './_base_/fpn_pvt_80k_ade20k.py'

# Official ImageNet-1K release (loaded through mmssm's VMamba converter).
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa: E501

# VMamba-T[s1l8]: see VMamba.arch_settings
model = dict(
    backbone=dict(_delete_=True, type='mmssm.VMamba', arch='tiny_s1l8', out_indices=(0, 1, 2, 3),
                  drop_path_rate=0.2,
                  # ImageNet checkpoint: its classifier is not used, the output norms are new
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_missing=['outnorm*'])),
    neck=dict(in_channels=[96, 192, 384, 768]))
