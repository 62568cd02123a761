from .reference import selective_scan_reference
from .selective_scan import (BACKENDS, resolve_backend, scan_backend, selective_scan,
                             selective_scan_lowrank)

__all__ = ['selective_scan', 'selective_scan_lowrank', 'selective_scan_reference', 'BACKENDS',
           'resolve_backend', 'scan_backend']
