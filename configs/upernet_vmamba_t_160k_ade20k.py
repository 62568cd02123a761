# UperNet 160k on ADE20K 512x512, backbone VMamba-T[s1l8]
# (mmssm name vmamba_t, VMamba arch 'tiny_s1l8').
# Paper result: reported -- mIoU SS 47.9, MS 48.8 (62M params, 949G FLOPs at 512x2048).
# Official config: MzeroMiko/VMamba segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py
#   (inherits mmseg's swin/swin-*-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py).
# Official segmentor checkpoint: upernet_vssm_4xb4-160k_ade20k-512x512_tiny_s_iter_160000.pth (GitHub release #v2seg).
_base_ = ['./_base_/upernet_swin_160k_ade20k.py', './_base_/models/vmamba_t.py']

model = dict(
    backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.2),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

# mmssm names these LayerNorms '*.norm*'; the official modules are Sequential indices
# (patch_embed.2/.7, downsample.3), which the recipe's 'norm' key does not match: they were
# decayed in the official runs. Longer keys win.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'backbone.patch_embed.norm': dict(decay_mult=1.), 'downsample.norm': dict(decay_mult=1.)}))
