# MobileMamba-B4 (mmssm name mobilemamba_b4, MobileMamba arch 'b4': see
# MobileMamba.arch_settings) as the backbone of a downstream recipe: its stage outputs
# blocks1..blocks3. A second ``_base_`` beside the recipe; the config takes the backbone
# out of this file's helper variable and states its task's norm_eval:
#     model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True, norm_eval=...))
# (``pop`` keeps the helper out of the resolved config).

# Official ImageNet-1K checkpoint (README Google Drive, non-distilled), converted on the
# fly by mmssm's MobileMamba converter.
pretrained = 'mobilemamba_b4.pth'

# MobileMamba-B4: embed dims 200/376/448, depths 2-3-2 (stride 16/32/64)
# stem (0, C1 @ 16), blocks1 (1, C1 @ 16), blocks2 (2, C2 @ 32), blocks3 (3, C3 @ 64)
# the B-architecture value used by every official downstream config
backbone = dict(
    type='mmssm.MobileMamba', arch='b4', out_indices=(1, 2, 3), frozen_stages=-1,
    drop_path_rate=0.03,
    # ImageNet checkpoint: its classifier is not used
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True))
