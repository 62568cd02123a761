# UperNet 160k on ADE20K 512x512, backbone MobileMamba-B4 (mmssm name mobilemamba_b4).
# Paper result: NOT REPORTED by the paper (MobileMamba reports Semantic FPN, DeepLabv3, PSPNet).
# Recipe of the nearest siblings (VMamba / MSVMamba / EfficientVMamba UperNet = Swin's);
# backbone settings as the official MobileMamba segmentation configs (B4, norm_eval False).
_base_ = ['./_base_/upernet_swin_160k_ade20k.py', './_base_/models/mobilemamba_b4.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, norm_eval=False),
    decode_head=dict(in_channels=[200, 376, 448], in_index=[0, 1, 2]),
    auxiliary_head=dict(in_channels=376, in_index=1))
