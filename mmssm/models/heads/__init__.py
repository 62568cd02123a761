"""Classification heads of the official models that mmpretrain has no module for.

The other official classifiers are stock mmpretrain parts: VMamba, MSVMamba and
EfficientVMamba classify with norm -> global average pool -> linear, i.e. the backbone's
out-norm of the last stage, ``GlobalAveragePooling`` and ``LinearClsHead``; Vim's
middle-class-token head is the backbone's ``out_type='cls_token'`` and ``LinearClsHead``.
This package subclasses mmpretrain's ``ClsHead`` and is imported only where mmpretrain is
installed (``mmssm.models`` checks).
"""
from .mobilemamba_head import MobileMambaClsHead

__all__ = ['MobileMambaClsHead']
