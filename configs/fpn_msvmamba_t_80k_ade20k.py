# Semantic FPN 80k on ADE20K 512x512, backbone MSVMamba-Tiny (mmssm name msvmamba_t).
# Paper result: NOT REPORTED by the paper (no Semantic FPN config or result in the repository).
# Recipe: PVT's Semantic FPN recipe; backbone settings as MSVMamba's Tiny UperNet config.
_base_ = './_base_/fpn_pvt_80k_ade20k.py'

# Official ImageNet-1K checkpoint (README Google Drive 'log&ckpt' folder; the name
# the official configs use). Converted on the fly by mmssm's MSVMamba converter.
pretrained = 'vssm_tiny_ms_e300.pth'

model = dict(
    backbone=dict(_delete_=True, type='mmssm.MSVMamba', arch='tiny', out_indices=(0, 1, 2, 3),
                  drop_path_rate=0.2,
                  # ImageNet checkpoint: its classifier is not used, the output norms are new
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_missing=['outnorm*'])),
    neck=dict(in_channels=[96, 192, 384, 768]))
