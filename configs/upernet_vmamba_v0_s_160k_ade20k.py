# UperNet 160k on ADE20K 512x512, backbone Vanilla-VMamba-S (v0)
# (mmssm name vmamba_v0_s, VMamba arch 'v0_small').
# Paper result: reported -- mIoU SS 49.5, MS 50.5 (76M params, 1081G FLOPs at 512x2048).
# Official config: MzeroMiko/VMamba segmentation/configs/vssm/upernet_vssm_4xb4-160k_ade20k-512x512_small.py
#   (inherits mmseg's swin/swin-*-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: vssmsmall_upernet_4xb4-160k_ade20k-512x512_iter_160000.pth (GitHub release #v0seg).
_base_ = './upernet_vmamba_v0_t_160k_ade20k.py'

# 0.3: what the official v0 segmentation configs really train with (not set by them;
# inherited from the Swin-T UperNet base config).
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmsmall_dp03_ckpt_epoch_238.pth'  # noqa: E501
model = dict(backbone=dict(arch='v0_small', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)))
