# UperNet 60k on ADE20K 512x512, backbone Vim-Ti (mmssm name vim_ti).
# Paper result: reported -- mIoU SS 41.0 (paper; ~13M params). The number is not in the
#   repository and was most likely obtained from an unreleased backbone (see vim.md).
# Official config: hustvl/Vim seg/configs/vim/upernet/upernet_vim_tiny_24_512_slide_60k.py
#   + seg/scripts/ft_vim_tiny_upernet.sh overrides (lr 2e-4, weight decay 0.1, layer decay 0.92).
#   The official wrapper passes its arguments positionally and builds d_state 3 and an
#   80-channel patch conv; this config builds the intended model (d_state 16, RGB input).
# Official segmentor checkpoint: not released.
_base_ = ['./_base_/upernet_swin_160k_ade20k.py', './_base_/models/vim_ti_seg.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True),
    # channels = E = 192 (official), not the base's 512
    decode_head=dict(in_channels=[192, 192, 192, 192], channels=192),
    auxiliary_head=dict(in_channels=192),
    test_cfg=dict(mode='slide', crop_size={{_base_.crop_size}}, stride=(341, 341)))

# Total batch: 32 = 8 images/GPU x 4 GPUs (official: 4 GPUs x 8, fp32)
train_dataloader = dict(batch_size=8)

train_cfg = dict(max_iters=60000, val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-06, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=60000, by_epoch=False),
]
default_hooks = dict(checkpoint=dict(interval=1000))

# Official: LayerDecayOptimizerConstructor(num_layers=24, layer_decay_rate=0.92), the
# BEiT constructor. It assigns layer ids only to names starting with 'backbone.blocks'
# (ViT naming); Vim's blocks are 'backbone.layers.*', so in the official runs only
# pos_embed / patch_embed got the layer-0 scale 0.92**25 and everything else 1.0. This
# reproduces what the reported model trained with; for a real layer-wise decay use
# mmseg's LayerDecayOptimizerConstructor (decay_type='layer_wise_vit').
# No weight decay for 1-D parameters and biases; pos_embed (3-D) is decayed.
optim_wrapper = dict(
    optimizer=dict(lr=2e-4, weight_decay=0.1),
    paramwise_cfg=dict(
        flat_decay_mult=0.,  # no decay for 1-D parameters (norms, biases, D)
        custom_keys={
            '_delete_': True,
            'backbone.pos_embed': dict(lr_mult=0.92**25),
            'backbone.patch_embed.proj.weight': dict(lr_mult=0.92**25),
            'backbone.patch_embed.proj.bias': dict(lr_mult=0.92**25, decay_mult=0.),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=32)
find_unused_parameters = True  # as the official config (norm_f is unused)
