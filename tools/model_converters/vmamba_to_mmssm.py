#!/usr/bin/env python
"""Convert an official VMamba checkpoint (github.com/MzeroMiko/VMamba: classification
``#v2cls`` / ``#v0cls`` release files such as ``vssm1_tiny_0230s_ckpt_epoch_264.pth``,
or an ``MM_VSSM`` detector / segmentor checkpoint) into an mmssm ``VMamba`` backbone
checkpoint. The classifier is dropped; the stem / downsample Sequential indices are
renamed (see ``mmssm/converters/vmamba.py``).

    python tools/model_converters/vmamba_to_mmssm.py SRC DST [--prefix backbone.]
"""
import os
import sys

try:
    from mmssm.converters.cli import main
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))
    from mmssm.converters.cli import main

if __name__ == '__main__':
    main('vmamba')
