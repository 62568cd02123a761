# SSDLite 512x512 on COCO, backbone MobileMamba-B1 (mmssm name mobilemamba_b1).
# Paper result: reported -- box AP 29.5 (README: 18.0M params, 4.4G FLOPs).
# Official config: lewandofskee/MobileMamba downstream/det/configs/ssd/ssdlite_mobilemamba_b1_8gpu_2lr_512_coco.py
#   (mmdet's ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py with the MobileMamba backbone).
# Official detector checkpoint: weights/downstream/det/ssdlite_512.pth (README Google Drive).
# The anchors are the 320 ones (strides 16..320) in both configs, as in the official 512 config.
_base_ = './ssdlite_mobilemamba_b1_320_coco.py'

input_size = 512
# the inherited pipelines at 512x512
train_pipeline = _base_.train_pipeline
train_pipeline[4].scale = (input_size, input_size)  # Resize
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale = (input_size, input_size)  # Resize
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
