# UperNet 160k on ADE20K 512x512, backbone VMamba-B[s2l15]
# (mmssm name vmamba_b, VMamba arch 'base_s2l15').
# Paper result: reported -- mIoU SS 51.0, MS 51.6 (122M params, 1170G FLOPs at 512x2048).
# Official config: MzeroMiko/VMamba segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_base.py
#   (inherits mmseg's swin/swin-*-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: upernet_vssm_4xb4-160k_ade20k-512x512_base_iter_160000.pth (GitHub release #v2seg).
_base_ = './upernet_vmamba_t_160k_ade20k.py'

# VMamba-B[s2l15]: see VMamba.arch_settings
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa: E501
model = dict(backbone=dict(arch='base_s2l15', drop_path_rate=0.6, init_cfg=dict(checkpoint=pretrained)),
             decode_head=dict(in_channels=[128, 256, 512, 1024]),
             auxiliary_head=dict(in_channels=512))
