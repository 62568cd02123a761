"""Convert an official EfficientVMamba checkpoint (TerryPei/EfficientVMamba:
classification ``efficient_vmamba_{tiny,small,base}.ckpt`` or a detection checkpoint)
into an mmssm ``EfficientVMamba`` backbone checkpoint.

Example::

    python tools/model_converters/efficientvmamba_to_mmssm.py \
        efficient_vmamba_tiny.ckpt efficientvmamba_tiny_mmssm.pth --prefix backbone.
"""
from mmssm.converters.cli import main

if __name__ == '__main__':
    main('efficientvmamba')
