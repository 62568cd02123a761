# ImageNet-1K classification, Vanilla-VMamba-T (mmssm name vmamba_v0_t, VMamba arch 'v0_tiny').
# Paper result: reported -- top-1 82.2 (23M params, 5.6G FLOPs at 224x224; VMamba README /
#   assets/performance.md, ImageNet-1K val).
#   (the README recounted the v0 FLOPs with the scan; earlier tables were lower).
# Official config: MzeroMiko/VMamba classification/configs/vssm/vmambav0_tiny_224.yaml
# Official checkpoint: vssmtiny_dp01_ckpt_epoch_292.pth (GitHub release #v0cls); evaluate it as it is:
#   python tools/test.py configs/cls_vmamba_v0_t_in1k.py vssmtiny_dp01_ckpt_epoch_292.pth
# Recipe: that of cls_vmamba_t_in1k.py (classification/config.py, Swin's); differences here.
_base_ = ['./cls_vmamba_t_in1k.py']

model = dict(
    backbone=dict(arch='v0_tiny', drop_path_rate=0.2),
    head=dict(in_channels=768))

# The only model trained without EMA (README). drop_path_rate is the yaml's 0.2 (the released
# file and its log are named dp01).
custom_hooks = []
