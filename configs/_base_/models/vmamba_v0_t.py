# Vanilla-VMamba-T (v0) (mmssm name vmamba_v0_t, VMamba arch 'v0_tiny': see VMamba.arch_settings)
# as the backbone of a detection / segmentation recipe. A second ``_base_`` beside the
# recipe; the config takes the backbone out of this file's helper variable:
#     model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=...))
# (``pop`` keeps the helper out of the resolved config). The drop path rate is the
# task's, so each config states it with its provenance.

# Official ImageNet-1K release (loaded through mmssm's VMamba converter).
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth'  # noqa: E501

backbone = dict(
    type='mmssm.VMamba', arch='v0_tiny', out_indices=(0, 1, 2, 3),
    # ImageNet checkpoint: its classifier is not used, the output norms are new
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                  allow_missing=['outnorm*']))
