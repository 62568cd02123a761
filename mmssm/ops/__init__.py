from .reference import selective_scan_reference
from .selective_scan import BACKENDS, selective_scan

__all__ = ['selective_scan', 'selective_scan_reference', 'BACKENDS']
