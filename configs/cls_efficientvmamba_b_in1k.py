# ImageNet-1K classification, EfficientVMamba-B (mmssm name efficientvmamba_b,
#   EfficientVMamba arch 'base').
# Paper result: reported -- top-1 81.8 (33M params, 4.0G FLOPs at 224x224; EfficientVMamba
#   README / paper, ImageNet-1K val).
# Official config: TerryPei/EfficientVMamba classification/configs/vssm/vssm_efficient_base.yaml;
#   recipe from classification/logs/log_efficient_vmamba_base.txt.
# Official checkpoint: efficient_vmamba_base.ckpt (HuggingFace TerryPei/EfficientVMamba-Base);
#   python tools/test.py configs/cls_efficientvmamba_b_in1k.py efficient_vmamba_base.ckpt
# Recipe: that of cls_efficientvmamba_t_in1k.py; differences here.
_base_ = ['./cls_efficientvmamba_t_in1k.py']

model = dict(backbone=dict(arch='base'), head=dict(in_channels=768))

# Total batch: 1024 = 64 images/GPU x 16 GPUs (same lr 2e-3 as T/S at 2048)
train_dataloader = dict(batch_size=64)
auto_scale_lr = dict(base_batch_size=1024)
