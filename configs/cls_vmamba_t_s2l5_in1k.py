# ImageNet-1K classification, VMamba-T[s2l5] (mmssm name vmamba_t_s2l5, VMamba arch 'tiny_s2l5').
# Paper result: reported -- top-1 82.5 (31M params, 4.9G FLOPs at 224x224; VMamba README /
#   assets/performance.md, ImageNet-1K val).
# Official config: MzeroMiko/VMamba classification/configs/vssm/vmambav2_tiny_224.yaml
# Official checkpoint: vssm_tiny_0230_ckpt_epoch_262.pth (GitHub release #v2cls); evaluate it as it is:
#   python tools/test.py configs/cls_vmamba_t_s2l5_in1k.py vssm_tiny_0230_ckpt_epoch_262.pth
# Recipe: that of cls_vmamba_t_in1k.py (classification/config.py, Swin's); differences here.
_base_ = ['./cls_vmamba_t_in1k.py']

model = dict(
    backbone=dict(arch='tiny_s2l5', drop_path_rate=0.2),
    head=dict(in_channels=768))
