# Vim-Ti (mmssm name vim_ti) as a segmentation backbone the way the official
# VisionMambaSeg wrapper builds it (512x512 input, four block outputs through the
# wrapper's fpn1..fpn4 adapters). A second ``_base_`` beside the recipe; the config
# takes the backbone out of this file's helper variable:
#     model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True), ...)
# (``pop`` keeps the helper out of the resolved config).

# Released ImageNet-1K checkpoint (middle class token, no rope). The official
# segmentation runs used unreleased files (pretrained-vim-{t,s}.pth); mmssm drops the
# class token's position entry and resizes the 14x14 grid to 32x32 on load.
pretrained = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'  # noqa: E501

# the official wrapper deletes the class token (if_cls_token only
# decides how the checkpoint is read)
# use_residual_as_feature=False: the blocks' mixer outputs
# the wrapper's fpn1..fpn4 adapters: strides 4/8/16/32, E channels each
# VisionMambaSeg default (not overridden by the configs)
backbone = dict(
    type='mmssm.Vim', arch='tiny', img_size=512,
    out_indices=(5, 11, 17, 23), with_cls_token=False, feature_type='mixer',
    use_rope=False, rope_residual=False, residual_in_fp32=False, divide_out=True,
    with_fpn=True, fpn_norm='SyncBN', drop_path_rate=0.1,
    # ImageNet checkpoint: classifier and class token not used, pos_embed resized
    # to this input grid, new fpn adapters
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                  allow_unexpected=['cls_token'], allow_resized=['pos_embed'],
                  allow_missing=['fpn*']))
