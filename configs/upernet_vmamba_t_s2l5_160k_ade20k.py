# UperNet 160k on ADE20K 512x512, backbone VMamba-T[s2l5]
# (mmssm name vmamba_t_s2l5, VMamba arch 'tiny_s2l5').
# Paper result: reported -- mIoU SS 48.3, MS 48.6 (62M params, 948G FLOPs at 512x2048).
# Official config: MzeroMiko/VMamba segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny1.py
#   (inherits mmseg's swin/swin-*-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: upernet_vssm_4xb4-160k_ade20k-512x512_tiny_iter_160000.pth (GitHub release #v2seg).
_base_ = './upernet_vmamba_t_160k_ade20k.py'

# VMamba-T[s2l5]: see VMamba.arch_settings
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_tiny_0230_ckpt_epoch_262.pth'  # noqa: E501
model = dict(backbone=dict(arch='tiny_s2l5', init_cfg=dict(checkpoint=pretrained)))
