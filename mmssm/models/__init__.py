"""Importing this package registers every mmssm model in ``mmssm.registry.MODELS``.

The classification heads subclass mmpretrain's ``ClsHead``: they are registered when
mmpretrain is installed (``requirements/openmmlab.txt``); the backbones and necks need
only torch and mmengine.
"""
import importlib.util

from . import backbones, necks  # noqa: F401



def _mmpretrain_installed() -> bool:
    try:
        return importlib.util.find_spec('mmpretrain') is not None
    except ImportError:  # an import hook that refuses it: as good as absent
        return False


if _mmpretrain_installed():
    from . import heads  # noqa: F401
