# Semantic FPN 80k on ADE20K 512x512, backbone Vim-Ti (mmssm name vim_ti).
# Paper result: NOT REPORTED by the paper.
# Recipe: PVT's Semantic FPN recipe; backbone (with the wrapper's fpn adapters) and slide
# test as Vim's own UperNet setup.
_base_ = './_base_/fpn_pvt_80k_ade20k.py'

# Released ImageNet-1K checkpoint (middle class token, no rope). The official
# segmentation runs used unreleased files (pretrained-vim-{t,s}.pth); mmssm drops the
# class token's position entry and resizes the 14x14 grid to 32x32 on load.
pretrained = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'  # noqa: E501

# the official wrapper deletes the class token (if_cls_token only
# decides how the checkpoint is read)
# use_residual_as_feature=False: the blocks' mixer outputs
# the wrapper's fpn1..fpn4 adapters: strides 4/8/16/32, E channels each
# VisionMambaSeg default (not overridden by the configs)
model = dict(
    backbone=dict(_delete_=True, type='mmssm.Vim', arch='tiny', img_size=512,
                  out_indices=(5, 11, 17, 23), with_cls_token=False, feature_type='mixer',
                  use_rope=False, rope_residual=False, residual_in_fp32=False, divide_out=True,
                  with_fpn=True, fpn_norm='SyncBN', drop_path_rate=0.1,
                  # ImageNet checkpoint: classifier and class token not used, pos_embed resized
                  # to this input grid, new fpn adapters
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, drop_classifier=True,
                                allow_unexpected=['cls_token'], allow_resized=['pos_embed'],
                                allow_missing=['fpn*'])),
    neck=dict(in_channels=[192, 192, 192, 192]),
    test_cfg=dict(mode='slide', crop_size={{_base_.crop_size}}, stride=(341, 341)))

find_unused_parameters = True  # norm_f is unused by mixer features
