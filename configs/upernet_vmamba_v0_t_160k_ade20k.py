# UperNet 160k on ADE20K 512x512, backbone Vanilla-VMamba-T (v0)
# (mmssm name vmamba_v0_t, VMamba arch 'v0_tiny').
# Paper result: reported -- mIoU SS 47.3, MS 48.3 (55M params, 964G FLOPs at 512x2048).
# Official config: MzeroMiko/VMamba segmentation/configs/vssm/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py
#   (inherits mmseg's swin/swin-*-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: vssmtiny_upernet_4xb4-160k_ade20k-512x512_iter_160000.pth (GitHub release #v0seg).
_base_ = ['./_base_/upernet_swin_160k_ade20k.py', './_base_/models/vmamba_v0_t.py']

# 0.3: what the official v0 segmentation configs really train with (not
# set by them; inherited from the Swin-T UperNet base config).
model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.3),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

# mmssm names the stem LayerNorm 'patch_embed.norm'; the official module is the Sequential
# index patch_embed.2, which the recipe's 'norm' key does not match: it was decayed in the
# official runs. Longer keys win.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'backbone.patch_embed.norm': dict(decay_mult=1.)}))
