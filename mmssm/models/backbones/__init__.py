# Each family module registers its backbone in mmssm.registry.MODELS on import.
from . import msvmamba  # noqa: F401
from . import efficient_vmamba  # noqa: F401
from . import vmamba  # noqa: F401
from . import mobilemamba  # noqa: F401
from . import vim  # noqa: F401
