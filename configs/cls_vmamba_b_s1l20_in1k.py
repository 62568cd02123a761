# ImageNet-1K classification, VMamba-B[s1l20] (mmssm name vmamba_b_s1l20, VMamba arch 'base_s1l20').
# Paper result: reported -- top-1 83.8 (87M params, 15.2G FLOPs at 224x224; VMamba README /
#   assets/performance.md, ImageNet-1K val).
# Official config: MzeroMiko/VMamba classification/configs/vssm/vmambav2v_base_224.yaml
# Official checkpoint: vssm1_base_0229s_ckpt_epoch_225.pth (GitHub release #v2cls); evaluate it as it is:
#   python tools/test.py configs/cls_vmamba_b_s1l20_in1k.py vssm1_base_0229s_ckpt_epoch_225.pth
# Recipe: that of cls_vmamba_t_in1k.py (classification/config.py, Swin's); differences here.
_base_ = ['./cls_vmamba_t_in1k.py']

model = dict(
    backbone=dict(arch='base_s1l20', drop_path_rate=0.5),
    head=dict(in_channels=1024))
