# ImageNet-1K classification, VMamba-T[s1l8] (mmssm name vmamba_t, VMamba arch 'tiny_s1l8').
# Paper result: reported -- top-1 82.6 (30M params, 4.9G FLOPs at 224x224; VMamba README /
#   assets/performance.md, ImageNet-1K val).
# Official config: MzeroMiko/VMamba classification/configs/vssm/vmambav2v_tiny_224.yaml
#   (+ classification/config.py defaults: the Swin training recipe, configs/_base_/
#   imagenet_swin_300e.py, which states it).
# Official checkpoint: vssm1_tiny_0230s_ckpt_epoch_264.pth (GitHub release #v2cls); evaluate it
#   as it is (converted on the fly, with its classifier):
#   python tools/test.py configs/cls_vmamba_t_in1k.py vssm1_tiny_0230s_ckpt_epoch_264.pth
# The official classifier is norm -> average pool -> linear on the last stage: here the
# backbone's out-norm of stage 3, GlobalAveragePooling and LinearClsHead (same parameters).
_base_ = ['./_base_/imagenet_swin_300e.py']

model = dict(
    backbone=dict(
        type='mmssm.VMamba',
        # VMamba-T[s1l8]: see VMamba.arch_settings
        arch='tiny_s1l8',
        out_indices=(3, ),  # its out-norm is the official classifier.norm
        drop_path_rate=0.2),
    head=dict(in_channels=768))
