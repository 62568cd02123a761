# UperNet 160k on ADE20K 512x512, backbone MobileMamba-B4 (mmssm name mobilemamba_b4).
# Paper result: NOT REPORTED by the paper (MobileMamba reports Semantic FPN, DeepLabv3, PSPNet).
# Recipe of the nearest siblings (VMamba / MSVMamba / EfficientVMamba UperNet = Swin's);
# backbone settings as the official MobileMamba segmentation configs (B4, norm_eval False).
_base_ = './_base_/upernet_swin_160k_ade20k.py'

# Official ImageNet-1K checkpoint (README Google Drive, non-distilled), converted on the
# fly by mmssm's MobileMamba converter.
pretrained = 'mobilemamba_b4.pth'

# MobileMamba-B4: embed dims 200/376/448, depths 2-3-2 (stride 16/32/64)
# stem (0, C1 @ 16), blocks1 (1, C1 @ 16), blocks2 (2, C2 @ 32), blocks3 (3, C3 @ 64)
# the B-architecture value used by every official downstream config
model = dict(
    backbone=dict(_delete_=True, type='mmssm.MobileMamba', arch='b4', out_indices=(1, 2, 3),
                  frozen_stages=-1, norm_eval=False, drop_path_rate=0.03,
                  # ImageNet checkpoint: its classifier is not used
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True)),
    decode_head=dict(in_channels=[200, 376, 448], in_index=[0, 1, 2]),
    auxiliary_head=dict(in_channels=376, in_index=1))
