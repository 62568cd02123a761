# ImageNet-1K classification, MSVMamba-Micro (mmssm name msvmamba_m, MSVMamba arch 'micro').
# Paper result: reported -- top-1 79.8 (12M params, 1.5G FLOPs at 224x224; MSVMamba README,
#   ImageNet-1K val).
# Official config: YuHengsss/MSVMamba classification/configs/vssm/vssm_micro_224_ms.yaml
# Official checkpoint: vssm_micro_ms_e300.pth (README Google Drive "log&ckpt"); evaluate it as it is:
#   python tools/test.py configs/cls_msvmamba_m_in1k.py vssm_micro_ms_e300.pth
# Recipe: that of cls_msvmamba_n_in1k.py; differences here.
_base_ = ['./cls_msvmamba_n_in1k.py']

model = dict(backbone=dict(arch='micro'), head=dict(in_channels=512))
