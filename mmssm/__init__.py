"""mmssm: vision state-space-model backbones for OpenMMLab."""
from . import compat  # noqa: F401  (applies the upstream-compatibility shims first)
from .registry import MODELS
from .version import __version__

__all__ = ['MODELS', '__version__']
