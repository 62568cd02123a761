# MSVMamba-T (mmssm name msvmamba_t, MSVMamba arch 'tiny': see MSVMamba.arch_settings)
# as the backbone of a detection / segmentation recipe. A second ``_base_`` beside the
# recipe; the config takes the backbone out of this file's helper variable:
#     model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=...))
# (``pop`` keeps the helper out of the resolved config). The drop path rate is the
# task's, so each config states it with its provenance.

# Official ImageNet-1K checkpoint (README Google Drive 'log&ckpt' folder; the name
# the official configs use). Converted on the fly by mmssm's MSVMamba converter.
pretrained = 'vssm_tiny_ms_e300.pth'

backbone = dict(
    type='mmssm.MSVMamba', arch='tiny', out_indices=(0, 1, 2, 3),
    # ImageNet checkpoint: its classifier is not used, the output norms are new
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                  allow_missing=['outnorm*']))
