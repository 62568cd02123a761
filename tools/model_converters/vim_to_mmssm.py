#!/usr/bin/env python
"""Convert an official Vision Mamba checkpoint (github.com/hustvl/Vim: classification
``vim_{t,s,b}_midclstok_*.pth`` with ``model``/``args`` entries, or an mmseg 0.x
``VisionMambaSeg`` segmentor checkpoint) into an mmssm ``Vim`` backbone checkpoint.

    python tools/model_converters/vim_to_mmssm.py SRC DST [--prefix backbone.]

The converted weights keep the checkpoint's own position-embedding grid; ``Vim`` fits
it to the model it is loaded into (see docs/vim.md).
"""
import os
import sys

try:
    from mmssm.converters.cli import main
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))
    from mmssm.converters.cli import main

if __name__ == '__main__':
    main('vim')
