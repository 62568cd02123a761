# UperNet 160k on ADE20K 512x512, backbone VMamba-S[s2l15]
# (mmssm name vmamba_s, VMamba arch 'small_s2l15').
# Paper result: reported -- mIoU SS 50.6, MS 51.2 (82M params, 1028G FLOPs at 512x2048).
# Official config: MzeroMiko/VMamba segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_small.py
#   (inherits mmseg's swin/swin-*-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: upernet_vssm_4xb4-160k_ade20k-512x512_small_iter_144000.pth (GitHub release #v2seg).
_base_ = './upernet_vmamba_t_160k_ade20k.py'

# VMamba-S[s2l15]: see VMamba.arch_settings
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa: E501
model = dict(backbone=dict(arch='small_s2l15', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)))
