# SSDLite 512x512 on COCO, backbone MobileMamba-B1 (mmssm name mobilemamba_b1).
# Paper result: reported -- box AP 29.5 (README: 18.0M params, 4.4G FLOPs).
# Official config: lewandofskee/MobileMamba downstream/det/configs/ssd/ssdlite_mobilemamba_b1_8gpu_2lr_512_coco.py
#   (mmdet's ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py with the MobileMamba backbone).
# Official detector checkpoint: weights/downstream/det/ssdlite_512.pth (README Google Drive).
# The anchors are the 320 ones (strides 16..320) in both configs, as in the official 512 config.
_base_ = './ssdlite_mobilemamba_b1_320_coco.py'

input_size = 512
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean={{_base_.data_preprocessor.mean}},
         to_rgb={{_base_.data_preprocessor.bgr_to_rgb}},
         ratio_range=(1, 4)),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=18),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
