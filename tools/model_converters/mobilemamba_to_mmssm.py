#!/usr/bin/env python
"""Convert an official MobileMamba checkpoint (github.com/lewandofskee/MobileMamba:
``mobilemamba_{t2,t4,s6,b1,b2,b4}.pth``, flat or a trainer file with ``net`` / ``net_E``;
or a downstream detector / segmentor checkpoint) into an mmssm ``MobileMamba`` backbone
checkpoint. The classifier is dropped; key names are unchanged.

    python tools/model_converters/mobilemamba_to_mmssm.py SRC DST [--prefix backbone.]

``net`` (the non-EMA weights) is used by default; ``--key net_E`` takes the EMA weights
(the ones the ImageNet numbers were measured with). A BN-fused checkpoint stays fused:
it loads into ``MobileMamba(deploy=True)`` or, through ``init_cfg``, switches the
model to its deploy form.
"""
import os
import sys

try:
    from mmssm.converters.cli import main
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))
    from mmssm.converters.cli import main

if __name__ == '__main__':
    main('mobilemamba')
