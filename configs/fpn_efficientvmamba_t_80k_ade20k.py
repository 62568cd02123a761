# Semantic FPN 80k on ADE20K 512x512, backbone EfficientVMamba-T (mmssm name efficientvmamba_t).
# Paper result: NOT REPORTED by the paper (no Semantic FPN result).
# Recipe: PVT's Semantic FPN recipe (EfficientVMamba follows PVT for RetinaNet).
_base_ = './_base_/fpn_pvt_80k_ade20k.py'

# Official ImageNet-1K release (Hugging Face TerryPei/EfficientVMamba-*), loaded
# through mmssm's EfficientVMamba converter.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Tiny/resolve/main/efficient_vmamba_tiny.ckpt'  # noqa: E501

# the released checkpoint (dims 48, depths 2-2-4-2); the official config
# writes depths 2-2-9-2, which loads the checkpoint only partially.
model = dict(
    backbone=dict(_delete_=True, type='mmssm.EfficientVMamba', arch='tiny',
                  out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
                  # ImageNet checkpoint: its classifier is not used, the output norms are new
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_missing=['outnorm*'])),
    neck=dict(in_channels=[48, 96, 192, 384]))
