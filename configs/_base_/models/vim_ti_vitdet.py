# Vim-Ti (mmssm name vim_ti) as the plain backbone of a ViTDet-style detector: one
# stride-16 map at 1024x1024 and the ViTDet simple feature pyramid over it. A second
# ``_base_`` beside the recipe; the config takes both out of this file's helper variables:
#     model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True),
#                  neck=dict(_base_.pop('neck'), _delete_=True))
# (``pop`` keeps the helpers out of the resolved config).

# Released ImageNet-1K checkpoint (middle class token, no rope). The official
# detection runs used unreleased files (Ti: a v1 rope / no-cls-token checkpoint);
# mmssm drops the class token's position entry and resizes the grid to 64x64 on load.
pretrained = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'  # noqa: E501

# position embedding grid 64x64 (ViTDet input); other sizes interpolate
# last_layer_process='add': last residual stream, no final norm
backbone = dict(
    type='mmssm.Vim', arch='tiny', img_size=1024,
    out_indices=(23, ), with_cls_token=False, feature_type='residual',
    last_feature='residual', use_rope=True, rope_residual=True,
    rope_pretrain_grid=14, residual_in_fp32=True, divide_out=True,
    drop_path_rate=0.1,
    # ImageNet checkpoint: classifier and class token not used, pos_embed resized
    # to this input grid, rope tables computed for it
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                  allow_unexpected=['cls_token'], allow_resized=['pos_embed'],
                  allow_missing=['rope.*']))

# ViTDet simple feature pyramid (LN): strides 4, 8, 16, 32 from the stride-16 map, plus
# one max-pooled level
neck = dict(
    type='mmssm.SimpleFPN',
    in_channels=192,
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    num_outs=5,
    norm_cfg=dict(type='LN'))
