#!/usr/bin/env python
"""Convert an official MSVMamba checkpoint (github.com/YuHengsss/MSVMamba, master:
classification ``vssm_*_ms_e300.pth`` / ``best_ckpt.pth`` or an MM_VSSM detector /
segmentor checkpoint) into an mmssm ``MSVMamba`` backbone checkpoint.

    python tools/model_converters/msvmamba_to_mmssm.py SRC DST [--prefix backbone.]
"""
import os
import sys

try:
    from mmssm.converters.cli import main
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))
    from mmssm.converters.cli import main

if __name__ == '__main__':
    main('msvmamba')
