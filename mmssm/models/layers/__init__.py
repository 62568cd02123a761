from .common import (GELU, PYRAMID_SCALES, ChannelScaleConv, DropPath, LayerNorm2d, Linear,
                     Linear2d, PatchMerging2D, SqueezeExcite, drop_path_rates,
                     fusable_activation, pyramid_resample, updates_in_place)
from .ss2d import (SS2D, SelectiveScanRoutes, init_dt_projection, init_s4d_real,
                   inverse_softplus_dt, scan_routes)

__all__ = [
    'GELU', 'PYRAMID_SCALES', 'ChannelScaleConv', 'DropPath', 'LayerNorm2d', 'Linear', 'Linear2d',
    'PatchMerging2D', 'SqueezeExcite',
    'drop_path_rates', 'fusable_activation', 'pyramid_resample', 'updates_in_place', 'SS2D',
    'SelectiveScanRoutes', 'init_dt_projection', 'init_s4d_real', 'inverse_softplus_dt',
    'scan_routes'
]
