# UperNet 160k on ADE20K 512x512, backbone EfficientVMamba-S (mmssm name efficientvmamba_s).
# Paper result: reported -- mIoU SS 41.5, MS 42.1 (paper Table 4: 29M params, 505G FLOPs).
# Official config: none (never committed); the paper says "aligned with VMamba": the
#   Swin UperNet recipe (AdamW 6e-5, 160k iterations, batch 16, 512x512).
_base_ = './upernet_efficientvmamba_t_160k_ade20k.py'

# the released checkpoint (dims 64, depths 2-2-4-2); the official config and the paper
# write dims 96, which cannot load the checkpoint.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Small/resolve/main/efficient_vmamba_small.ckpt'  # noqa: E501
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
             decode_head=dict(in_channels=[64, 128, 256, 512], channels=384),
             auxiliary_head=dict(in_channels=256))
