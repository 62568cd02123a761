# UperNet 160k on ADE20K 512x512, backbone MSVMamba-Micro (mmssm name msvmamba_m).
# Paper result: reported -- mIoU SS 45.1, MS 45.4 (42M params, 875G FLOPs).
# Official config: YuHengsss/MSVMamba segmentation/configs/ms_vssm/upernet_ms_vssm_4xb4-160k_ade20k-512x512_micro.py
#   (inherits mmseg's swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: README Google Drive 'log&ckpt' folder.
_base_ = './upernet_msvmamba_t_160k_ade20k.py'

# 0.3: what the official Nano/Micro configs really train with (not set by them;
# inherited from the Swin-T UperNet base config).
pretrained = 'vssm_micro_ms_e300.pth'
model = dict(backbone=dict(arch='micro', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)),
             decode_head=dict(in_channels=[64, 128, 256, 512]),
             auxiliary_head=dict(in_channels=256))
