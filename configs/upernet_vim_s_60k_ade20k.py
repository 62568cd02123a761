# UperNet 60k on ADE20K 512x512, backbone Vim-S (mmssm name vim_s).
# Paper result: reported -- mIoU SS 44.9 (paper; ~46M params). The number is not in the
#   repository and was most likely obtained from an unreleased backbone (see vim.md).
# Official config: hustvl/Vim seg/configs/vim/upernet/upernet_vim_small_24_512_slide_60k.py
#   + seg/scripts/ft_vim_small_upernet.sh overrides (lr 1e-4, weight decay 0.05, layer decay 0.95).
#   The official wrapper passes its arguments positionally and builds d_state 3 and an
#   80-channel patch conv; this config builds the intended model (d_state 16, RGB input).
# Official segmentor checkpoint: not released.
_base_ = './upernet_vim_ti_60k_ade20k.py'

# Released ImageNet-1K checkpoint (middle class token, no rope). The official
# segmentation runs used unreleased files (pretrained-vim-{t,s}.pth); mmssm drops the
# class token's position entry and resizes the 14x14 grid to 32x32 on load.
pretrained = 'https://huggingface.co/hustvl/Vim-small-midclstok/resolve/main/vim_s_midclstok_80p5acc.pth'  # noqa: E501

# use_residual_as_feature=True (training script)
# last_layer_process='add' (training script)
model = dict(
    backbone=dict(arch='small', feature_type='residual', last_feature='residual', use_rope=True,
                  rope_residual=True, rope_pretrain_grid=14, residual_in_fp32=True,
                  # this variant uses rope: its tables are computed, not loaded
                  init_cfg=dict(checkpoint=pretrained, allow_missing=['rope.*', 'fpn*'])),
    # channels = E = 384 (official), not the base's 512
    decode_head=dict(in_channels=[384, 384, 384, 384], channels=384),
    auxiliary_head=dict(in_channels=384))

# Official layer decay 0.95 (see upernet_vim_ti_60k_ade20k.py for what it amounts to).
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'backbone.pos_embed': dict(lr_mult=0.95**25),
        'backbone.patch_embed.proj.weight': dict(lr_mult=0.95**25),
        'backbone.patch_embed.proj.bias': dict(lr_mult=0.95**25, decay_mult=0.),
    }))
