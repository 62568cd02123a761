# EfficientVMamba-T (mmssm name efficientvmamba_t, EfficientVMamba arch 'tiny': see
# EfficientVMamba.arch_settings) as the backbone of a detection / segmentation recipe.
# A second ``_base_`` beside the recipe; the config takes the backbone out of this
# file's helper variable:
#     model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=...))
# (``pop`` keeps the helper out of the resolved config). The drop path rate is the
# task's, so each config states it with its provenance.

# Official ImageNet-1K release (Hugging Face TerryPei/EfficientVMamba-*), loaded
# through mmssm's EfficientVMamba converter.
pretrained = 'https://huggingface.co/TerryPei/EfficientVMamba-Tiny/resolve/main/efficient_vmamba_tiny.ckpt'  # noqa: E501

# the released checkpoint (dims 48, depths 2-2-4-2); the official config
# writes depths 2-2-9-2, which loads the checkpoint only partially.
backbone = dict(
    type='mmssm.EfficientVMamba', arch='tiny', out_indices=(0, 1, 2, 3),
    # ImageNet checkpoint: its classifier is not used, the output norms are new
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                  allow_missing=['outnorm*']))
