# ImageNet-1K classification, VMamba-B[s2l15] (mmssm name vmamba_b, VMamba arch 'base_s2l15').
# Paper result: reported -- top-1 83.9 (89M params, 15.4G FLOPs at 224x224; VMamba README /
#   assets/performance.md, ImageNet-1K val).
# Official config: MzeroMiko/VMamba classification/configs/vssm/vmambav2_base_224.yaml
# Official checkpoint: vssm_base_0229_ckpt_epoch_237.pth (GitHub release #v2cls); evaluate it as it is:
#   python tools/test.py configs/cls_vmamba_b_in1k.py vssm_base_0229_ckpt_epoch_237.pth
# Recipe: that of cls_vmamba_t_in1k.py (classification/config.py, Swin's); differences here.
_base_ = ['./cls_vmamba_t_in1k.py']

model = dict(
    backbone=dict(arch='base_s2l15', drop_path_rate=0.6),
    head=dict(in_channels=1024))
