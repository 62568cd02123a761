# ImageNet-1K classification, MobileMamba-T2 at 192x192 (mmssm name mobilemamba_t2,
#   MobileMamba arch 't2').
# Paper result: reported -- top-1 73.6 (8.8M params, 255M FLOPs at 192x192; MobileMamba README
#   test command / training log, ImageNet-1K val; the README table's 71.5 contradicts both).
# Official config: lewandofskee/MobileMamba configs/mobilemamba/mobilemamba_t2.py
# Official checkpoint: weights/MobileMamba_T2/mobilemamba_t2.pth (README, Google Drive);
#   evaluate it as it is (converted on the fly, with its classifier; --cfg-options
#   load_from_key=net_E for the EMA weights the numbers were measured with):
#   python tools/test.py configs/cls_mobilemamba_t2_in1k.py mobilemamba_t2.pth
# The official classifier is average pool -> BN_Linear: GlobalAveragePooling and
# MobileMambaClsHead here. The knowledge-distilled "dagger" checkpoints (mobilemamba_t2s.pth,
# ..., 1000 epochs, soft KD from TResNet-L-v2) have the same architecture and evaluate with
# the same config; mmssm does not implement their distillation training.
_base_ = ['./_base_/imagenet_swin_300e.py']

model = dict(
    backbone=dict(
        type='mmssm.MobileMamba',
        # MobileMamba-T2: see MobileMamba.arch_settings
        arch='t2',
        out_indices=(3, ),  # blocks3
        drop_path_rate=0.0),
    head=dict(type='mmssm.MobileMambaClsHead', in_channels=368))

# ------------------------------------------------------------------ data
# The shared timm augmentations at the model's resolution. The official crop interpolation
# is 'random' (bilinear or bicubic per image), which mmpretrain's RandomResizedCrop cannot
# express: bicubic here. Evaluation: short side int(size / 0.875) bicubic, center crop.
# T2 trains and evaluates at 192x192: test resize int(192 / 0.875) = 219.
train_pipeline = _base_.train_pipeline
train_pipeline[1].scale = 192  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale, test_pipeline[2].crop_size = 219, 192  # ResizeEdge, CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=125, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# -------------------------------------------------------------- schedule
# 300 epochs, 20 warm-up epochs from lr / 1000, cosine per iteration to lr / 100
train_cfg = dict(val_interval=5)
param_scheduler = _base_.param_scheduler
param_scheduler[1].eta_min = 3e-5

# ------------------------------------------------------------- optimizer
# AdamW lr 3e-3 (1.5e-3 x 1024 / 512), eps 1e-8, wd 0.05, grad-norm clip 5, AMP; no weight
# decay for 1-D parameters and biases (optim/__init__.py add_weight_decay).
optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(lr=3e-3), loss_scale='dynamic')
# model EMA, decay 0.9998 (the reported numbers are the EMA model's)
custom_hooks = [dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL')]
