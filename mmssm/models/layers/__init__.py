from .common import DropPath, LayerNorm2d, Linear2d, PatchMerging2D, drop_path_rates
from .ss2d import SS2D, SelectiveScanRoutes, inverse_softplus_dt

__all__ = [
    'DropPath', 'LayerNorm2d', 'Linear2d', 'PatchMerging2D', 'drop_path_rates', 'SS2D',
    'SelectiveScanRoutes', 'inverse_softplus_dt'
]
