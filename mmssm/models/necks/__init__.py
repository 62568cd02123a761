# Necks register in mmssm.registry.MODELS on import.
from . import simple_fpn  # noqa: F401
from . import efficientvit_fpn  # noqa: F401
