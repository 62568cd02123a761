# ImageNet-1K classification, MSVMamba-Tiny (mmssm name msvmamba_t, MSVMamba arch 'tiny').
# Paper result: reported -- top-1 82.8 (33M params, 4.6G FLOPs at 224x224; MSVMamba README,
#   ImageNet-1K val).
# Official config: YuHengsss/MSVMamba classification/configs/vssm/vssm_tiny_224_ms.yaml
# Official checkpoint: vssm_tiny_ms_e300.pth (README Google Drive "log&ckpt"); evaluate it as it is:
#   python tools/test.py configs/cls_msvmamba_t_in1k.py vssm_tiny_ms_e300.pth
# Recipe: that of cls_msvmamba_n_in1k.py; differences here.
_base_ = ['./cls_msvmamba_n_in1k.py']

model = dict(backbone=dict(arch='tiny'), head=dict(in_channels=768))
