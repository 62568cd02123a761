"""Importing this package registers every mmssm model in ``mmssm.registry.MODELS``."""
from . import backbones, necks  # noqa: F401
