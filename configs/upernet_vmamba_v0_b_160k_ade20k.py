# UperNet 160k on ADE20K 512x512, backbone Vanilla-VMamba-B (v0)
# (mmssm name vmamba_v0_b, VMamba arch 'v0_base').
# Paper result: reported -- mIoU SS 50.0, MS 51.3 (110M params, 1226G FLOPs at 512x2048).
# Official config: MzeroMiko/VMamba segmentation/configs/vssm/upernet_vssm_4xb4-160k_ade20k-512x512_base.py
#   (inherits mmseg's swin/swin-*-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: vssmbase_upernet_4xb4-160k_ade20k-512x512_iter_128000.pth (GitHub release #v0seg).
_base_ = './upernet_vmamba_v0_t_160k_ade20k.py'

# 0.3: what the official v0 segmentation configs really train with (not set by them;
# inherited from the Swin-T UperNet base config).
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmbase_dp06_ckpt_epoch_241.pth'  # noqa: E501
model = dict(backbone=dict(arch='v0_base', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)),
             decode_head=dict(in_channels=[128, 256, 512, 1024]),
             auxiliary_head=dict(in_channels=512))
