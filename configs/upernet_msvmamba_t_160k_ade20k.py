# UperNet 160k on ADE20K 512x512, backbone MSVMamba-Tiny (mmssm name msvmamba_t).
# Paper result: reported -- mIoU SS 47.8, MS not reported (65M params, 942G FLOPs).
# Official config: YuHengsss/MSVMamba segmentation/configs/ms_vssm/upernet_ms_vssm_4xb4-160k_ade20k-512x512_tiny.py
#   (inherits mmseg's swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: README Google Drive 'log&ckpt' folder.
_base_ = ['./_base_/upernet_swin_160k_ade20k.py', './_base_/models/msvmamba_t.py']

# 0.2: set explicitly by the official Tiny config.
model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.2),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
