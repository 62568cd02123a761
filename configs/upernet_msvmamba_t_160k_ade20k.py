# UperNet 160k on ADE20K 512x512, backbone MSVMamba-Tiny (mmssm name msvmamba_t).
# Paper result: reported -- mIoU SS 47.8, MS not reported (65M params, 942G FLOPs).
# Official config: YuHengsss/MSVMamba segmentation/configs/ms_vssm/upernet_ms_vssm_4xb4-160k_ade20k-512x512_tiny.py
#   (inherits mmseg's swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: README Google Drive 'log&ckpt' folder.
_base_ = './_base_/upernet_swin_160k_ade20k.py'

# Official ImageNet-1K checkpoint (README Google Drive 'log&ckpt' folder; the name
# the official configs use). Converted on the fly by mmssm's MSVMamba converter.
pretrained = 'vssm_tiny_ms_e300.pth'

# 0.2: set explicitly by the official Tiny config.
model = dict(
    backbone=dict(_delete_=True, type='mmssm.MSVMamba', arch='tiny', out_indices=(0, 1, 2, 3),
                  drop_path_rate=0.2,
                  # ImageNet checkpoint: its classifier is not used, the output norms are new
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_missing=['outnorm*'])),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
