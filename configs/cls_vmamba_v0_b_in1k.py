# ImageNet-1K classification, Vanilla-VMamba-B (mmssm name vmamba_v0_b, VMamba arch 'v0_base').
# Paper result: reported -- top-1 83.7 (76M params, 18.0G FLOPs at 224x224; VMamba README /
#   assets/performance.md, ImageNet-1K val).
#   (the README recounted the v0 FLOPs with the scan; earlier tables were lower).
# Official config: MzeroMiko/VMamba classification/configs/vssm/vmambav0_base_224.yaml
# Official checkpoint: vssmbase_dp06_ckpt_epoch_241.pth (GitHub release #v0cls); evaluate it as it is:
#   python tools/test.py configs/cls_vmamba_v0_b_in1k.py vssmbase_dp06_ckpt_epoch_241.pth
# Recipe: that of cls_vmamba_t_in1k.py (classification/config.py, Swin's); differences here.
_base_ = ['./cls_vmamba_t_in1k.py']

model = dict(
    backbone=dict(arch='v0_base', drop_path_rate=0.5),
    head=dict(in_channels=1024))

# drop_path_rate is the yaml's 0.5 (the released file is named dp06; the single-file factory
# uses 0.6).
