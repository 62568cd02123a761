"""Runner-level parts (mmengine hooks); registered in :data:`mmssm.registry.HOOKS`."""
from .hooks import StrictLoadHook

__all__ = ['StrictLoadHook']
