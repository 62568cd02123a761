# ImageNet-1K classification, Vanilla-VMamba-S (mmssm name vmamba_v0_s, VMamba arch 'v0_small').
# Paper result: reported -- top-1 83.5 (44M params, 11.2G FLOPs at 224x224; VMamba README /
#   assets/performance.md, ImageNet-1K val).
#   (the README recounted the v0 FLOPs with the scan; earlier tables were lower).
# Official config: MzeroMiko/VMamba classification/configs/vssm/vmambav0_small_224.yaml
# Official checkpoint: vssmsmall_dp03_ckpt_epoch_238.pth (GitHub release #v0cls); evaluate it as it is:
#   python tools/test.py configs/cls_vmamba_v0_s_in1k.py vssmsmall_dp03_ckpt_epoch_238.pth
# Recipe: that of cls_vmamba_t_in1k.py (classification/config.py, Swin's); differences here.
_base_ = ['./cls_vmamba_t_in1k.py']

model = dict(
    backbone=dict(arch='v0_small', drop_path_rate=0.3),
    head=dict(in_channels=768))
