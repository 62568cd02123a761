# ImageNet-1K classification, MSVMamba-Nano (mmssm name msvmamba_n, MSVMamba arch 'nano').
# Paper result: reported -- top-1 77.3 (7M params, 0.9G FLOPs at 224x224; MSVMamba README,
#   ImageNet-1K val).
# Official config: YuHengsss/MSVMamba classification/configs/vssm/vssm_nano_224_ms.yaml
#   (+ classification/config.py defaults: VMamba's Swin training recipe).
# Official checkpoint: vssm_nano_ms_e300.pth (README Google Drive "log&ckpt"); evaluate it
#   as it is (converted on the fly, with its classifier):
#   python tools/test.py configs/cls_msvmamba_n_in1k.py vssm_nano_ms_e300.pth
# The official classifier is norm -> average pool -> linear on the last stage: the
# backbone's out-norm of stage 3, GlobalAveragePooling and LinearClsHead here.
# Recipe: VMamba's (same training code), configs/_base_/imagenet_swin_300e.py; differences
#   here.
_base_ = ['./_base_/imagenet_swin_300e.py']

model = dict(
    backbone=dict(
        type='mmssm.MSVMamba',
        # MSVMamba-Nano: see MSVMamba.arch_settings
        arch='nano',
        out_indices=(3, ),  # its out-norm is the official classifier.norm
        drop_path_rate=0.2),
    head=dict(in_channels=384))
