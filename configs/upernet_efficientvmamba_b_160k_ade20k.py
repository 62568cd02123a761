# UperNet 160k on ADE20K 512x512, backbone EfficientVMamba-B (mmssm name efficientvmamba_b).
# Paper result: reported -- mIoU SS 46.5, MS 47.3 (paper Table 4: 65M params, 930G FLOPs).
# Official config: none (never committed); the paper says "aligned with VMamba": the
#   Swin UperNet recipe (AdamW 6e-5, 160k iterations, batch 16, 512x512).
_base_ = './upernet_efficientvmamba_t_160k_ade20k.py'

pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Base/resolve/main/efficient_vmamba_base.ckpt'  # noqa: E501
model = dict(backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),
             decode_head=dict(in_channels=[96, 192, 384, 768], channels=512),
             auxiliary_head=dict(in_channels=384))
