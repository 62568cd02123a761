# ImageNet-1K classification, VMamba-S[s2l15] (mmssm name vmamba_s, VMamba arch 'small_s2l15').
# Paper result: reported -- top-1 83.6 (50M params, 8.7G FLOPs at 224x224; VMamba README /
#   assets/performance.md, ImageNet-1K val).
# Official config: MzeroMiko/VMamba classification/configs/vssm/vmambav2_small_224.yaml
# Official checkpoint: vssm_small_0229_ckpt_epoch_222.pth (GitHub release #v2cls); evaluate it as it is:
#   python tools/test.py configs/cls_vmamba_s_in1k.py vssm_small_0229_ckpt_epoch_222.pth
# Recipe: that of cls_vmamba_t_in1k.py (classification/config.py, Swin's); differences here.
_base_ = ['./cls_vmamba_t_in1k.py']

model = dict(
    backbone=dict(arch='small_s2l15', drop_path_rate=0.3),
    head=dict(in_channels=768))
