# ImageNet-1K classification, EfficientVMamba-S (mmssm name efficientvmamba_s,
#   EfficientVMamba arch 'small').
# Paper result: reported -- top-1 78.7 (11M params, 1.3G FLOPs at 224x224; EfficientVMamba
#   README / paper, ImageNet-1K val).
# Official config: TerryPei/EfficientVMamba classification/configs/vssm/vssm_efficient_small.yaml;
#   recipe from classification/logs/log_efficient_vmamba_small.txt.
# Official checkpoint: efficient_vmamba_small.ckpt (HuggingFace TerryPei/EfficientVMamba-Small);
#   python tools/test.py configs/cls_efficientvmamba_s_in1k.py efficient_vmamba_small.ckpt
# Recipe: that of cls_efficientvmamba_t_in1k.py (same log settings); differences here.
_base_ = ['./cls_efficientvmamba_t_in1k.py']

model = dict(backbone=dict(arch='small'), head=dict(in_channels=512))
