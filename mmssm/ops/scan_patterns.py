"""Scan orders as data: index maps from sequence positions to feature-map pixels.

A scan pattern with K routes over a map of ``P`` pixels is an integer tensor
``index`` of shape (K, L'): route ``k`` visits pixel ``index[k, l]`` (row-major flat
position) at step ``l``; ``-1`` marks a padding step that reads zero and whose output
is discarded. Every backbone's scan is one of these maps plus the shared selective-scan
core.

Each pattern is described once, as data, in :data:`SCAN_PATTERNS`: a :class:`ScanPattern`
is a tuple of routes, a route a tuple of :class:`Segment` s (a traversal of a
sub-lattice of the map: row- or column-major, forward or reversed); the index map is
computed from that description (and cached per size and device). The description also
says what a route is in terms of plain tensor ops, so that fast paths can use them
(:attr:`ScanPattern.is_permutation`: every route is the whole map read row- or
column-major, possibly reversed, i.e. a flip and/or transpose of the map):

* ``'cross'``          VMamba SS2D: row-major, column-major and both reversed.
* ``'bidirectional'``  MobileMamba / Vim: a sequence and its reversal.
* ``'atrous'``         EfficientVMamba ES2D: four stride-2 sub-lattices, one route per
                       pixel parity, zero padding to even size.
* ``'multiscale_low'`` MSVMamba low-resolution route: reversed row-major, column-major
                       and reversed column-major concatenated into one sequence (state
                       carried across segments).
* ``'row'``            a single forward route.

:func:`scan_gather` reads a map into the (B, K, C, L') scan layout and
:func:`scan_merge` is its exact adjoint (scatter-add back to pixels), so autograd of
one is the other.

Backends: for CUDA tensors (fp32/fp16/bf16) both run as single fused Triton kernels
(:mod:`mmssm.ops.scan_patterns_triton`) when ``triton`` is importable; everywhere else,
or with the environment variable ``MMSSM_DISABLE_TRITON=1``, they use the PyTorch
index_select / index_add path below. ``backend='torch'`` / ``'triton'`` forces one.
"""
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Optional, Tuple

import torch

Tensor = torch.Tensor

SCAN_BACKENDS = ('torch', 'triton')
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_triton_module = None  # the imported kernels module, or the error importing it raised


@dataclass(frozen=True)
class Segment:
    """One traversal of a sub-lattice of an H x W map.

    The sub-lattice is the pixels ``(offset[0] + step * i, offset[1] + step * j)`` of the
    map zero-padded to a multiple of ``step``; it is read row-major (``order='row'``) or
    column-major (``'col'``), and the whole read is reversed with ``reverse``. Padding
    pixels are ``-1`` in the index map.
    """
    order: str = 'row'
    reverse: bool = False
    step: int = 1
    offset: Tuple[int, int] = (0, 0)

    def __post_init__(self):
        if self.order not in ('row', 'col') or self.step < 1 or not all(
                0 <= o < self.step for o in self.offset):
            raise ValueError(f'scan pattern: invalid segment {self}')

    @property
    def is_whole_map(self) -> bool:
        """The segment reads every pixel once: a flip and/or transpose of the map."""
        return self.step == 1

    def index(self, grid: Tensor) -> Tensor:
        """The pixels this segment visits, in order, on ``grid`` (the (h, w) map of
        row-major pixel numbers, already padded with -1 to a multiple of ``step``)."""
        sub = grid[self.offset[0]::self.step, self.offset[1]::self.step]
        route = (sub if self.order == 'row' else sub.t()).flatten()
        return route.flip(0) if self.reverse else route


@dataclass(frozen=True)
class ScanPattern:
    """K routes over a map, each a concatenation of :class:`Segment` s."""
    name: str
    routes: Tuple[Tuple[Segment, ...], ...]
    description: str = ''

    @property
    def num_routes(self) -> int:
        return len(self.routes)

    @property
    def is_permutation(self) -> bool:
        """Every route is one whole-map segment: each route is the map flipped and/or
        transposed (no padding, no concatenation)."""
        return all(len(r) == 1 and r[0].is_whole_map for r in self.routes)

    def index(self, h: int, w: int, device=None) -> Tensor:
        """(K, L') index map for an h x w map (cached per size and device)."""
        return _index(self.name, h, w, device)

    def build_index(self, h, w, device=None) -> Tensor:
        """The map from tensor operations only: ``h``/``w`` may be ints or the traced
        sizes of an export, and no branch depends on their values, so an exported graph
        builds the right map for every input size."""
        grid = torch.arange(h * w, dtype=torch.long, device=device).reshape(h, w)
        grids = {}
        for step in {seg.step for route in self.routes for seg in route}:
            padded = grid
            if step > 1:  # pad with -1 (zero pixels) to a multiple of step
                pad_h, pad_w = (step - h % step) % step, (step - w % step) % step
                padded = torch.cat([padded, padded.new_full((pad_h, w), -1)], 0)
                padded = torch.cat([padded, padded.new_full((h + pad_h, pad_w), -1)], 1)
            grids[step] = padded
        return torch.stack([torch.cat([seg.index(grids[seg.step]) for seg in route])
                            for route in self.routes])


_ROW, _COL = Segment('row'), Segment('col')
_ROW_REV, _COL_REV = Segment('row', reverse=True), Segment('col', reverse=True)
SCAN_PATTERNS: Dict[str, ScanPattern] = {p.name: p for p in (
    ScanPattern('row', ((_ROW, ), ), 'one forward row-major route'),
    ScanPattern('cross', ((_ROW, ), (_COL, ), (_ROW_REV, ), (_COL_REV, )),
                'VMamba SS2D: row-major, column-major, both reversed'),
    ScanPattern('bidirectional', ((_ROW, ), (_ROW_REV, )),
                'MobileMamba / Vim: a sequence and its reversal'),
    ScanPattern('atrous', ((Segment('row', step=2, offset=(0, 0)), ),
                           (Segment('col', step=2, offset=(1, 0)), ),
                           (Segment('row', step=2, offset=(0, 1)), ),
                           (Segment('col', step=2, offset=(1, 1)), )),
                'EfficientVMamba ES2D: (even, even) and (even, odd) row-major, (odd, even) '
                'and (odd, odd) column-major stride-2 sub-lattices'),
    ScanPattern('multiscale_low', ((_ROW_REV, _COL, _COL_REV), ),
                'MSVMamba low-resolution route: reversed row-major, column-major, reversed '
                'column-major as one sequence'),
)}


def get_scan_pattern(name: str) -> ScanPattern:
    """The pattern called ``name`` in :data:`SCAN_PATTERNS`."""
    if name not in SCAN_PATTERNS:
        raise ValueError(f'unknown scan pattern {name!r}; choose from {sorted(SCAN_PATTERNS)}')
    return SCAN_PATTERNS[name]


def _check_size(h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise ValueError(f'scan pattern: feature map must be non-empty, got {h}x{w}')


@lru_cache(maxsize=256)
def _cpu_index(kind: str, h: int, w: int) -> Tensor:
    _check_size(h, w)
    return get_scan_pattern(kind).build_index(h, w)


@lru_cache(maxsize=256)
def _device_index(kind: str, h: int, w: int, device: torch.device) -> Tensor:
    return _cpu_index(kind, h, w).to(device)


def _index(kind: str, h: int, w: int, device) -> Tensor:
    # Cached per device too: no host-to-device copy per call, and the same tensor on
    # every call lets the Triton path reuse its per-index metadata. An ONNX export
    # builds the map inside the graph from the (traced) sizes instead.
    if torch.onnx.is_in_onnx_export():
        return get_scan_pattern(kind).build_index(h, w, device)
    if device is None:
        return _cpu_index(kind, int(h), int(w))
    device = torch.device(device)
    if device.type == 'cpu':
        return _cpu_index(kind, int(h), int(w))
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return _device_index(kind, int(h), int(w), device)


def row_major_index(h: int, w: int, device=None) -> Tensor:
    """(1, H*W): one forward row-major route."""
    return _index('row', h, w, device)


def cross_scan_index(h: int, w: int, device=None) -> Tensor:
    """(4, H*W): row-major, column-major, reversed row-major, reversed column-major."""
    return _index('cross', h, w, device)


def bidirectional_index(length: int, device=None) -> Tensor:
    """(2, L): a 1-D sequence and its reversal (a map of size 1 x L)."""
    return _index('bidirectional', 1, length, device)


def atrous_index(h: int, w: int, device=None) -> Tensor:
    """(4, ceil(H/2)*ceil(W/2)): EfficientVMamba skip-sampling routes (step 2).

    Route 0 visits (2i, 2j) row-major, route 1 (2i+1, 2j) column-major, route 2
    (2i, 2j+1) row-major, route 3 (2i+1, 2j+1) column-major; pixels outside an odd
    map are padding steps (-1). Each real pixel belongs to exactly one route.
    """
    return _index('atrous', h, w, device)


def multiscale_low_index(h: int, w: int, device=None) -> Tensor:
    """(1, 3*H*W): MSVMamba's low-resolution route over the downsampled map: reversed
    row-major, then column-major, then reversed column-major, as ONE sequence."""
    return _index('multiscale_low', h, w, device)


def _triton_kernels():
    """The Triton kernels module, or None if triton cannot be imported."""
    global _triton_module
    if _triton_module is None:
        try:
            from . import scan_patterns_triton
            _triton_module = scan_patterns_triton
        except Exception as err:  # noqa: BLE001 - no triton, or a broken install
            _triton_module = err
    return None if isinstance(_triton_module, Exception) else _triton_module


def resolve_gather_backend(t: Tensor, backend: Optional[str] = None) -> str:
    """``'triton'`` or ``'torch'`` for a gather/merge on tensor ``t``.

    ``backend=None``: Triton for CUDA tensors of dtype fp32/fp16/bf16 when triton is
    importable and ``MMSSM_DISABLE_TRITON`` is not set to 1; torch otherwise.
    ``'triton'`` raises a RuntimeError if triton cannot be imported.
    """
    if backend is None:
        disabled = os.environ.get('MMSSM_DISABLE_TRITON', '0').lower() in ('1', 'true', 'yes')
        if (disabled or not t.is_cuda or t.dtype not in _TRITON_DTYPES
                or _triton_kernels() is None):
            return 'torch'
        return 'triton'
    if backend not in SCAN_BACKENDS:
        raise ValueError(f'scan pattern: unknown backend {backend!r}; choose one of '
                         f'{SCAN_BACKENDS} or None')
    if backend == 'triton' and _triton_kernels() is None:
        raise RuntimeError(f'scan pattern: backend \'triton\' needs the triton package '
                           f'({_triton_module}); install it or use backend=\'torch\'')
    return backend


def scan_gather(x: Tensor, index: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """Read a map into scan layout.

    Args:
        x: (B, C, H, W) or (B, C, P) features (any strides, e.g. channels-last).
        index: (K, L') pixel indices into the flattened map, -1 for zero padding.
        backend: None (Triton for CUDA tensors when available), 'torch' or 'triton'.

    Returns:
        (B, K, C, L') with ``out[b, k, c, l] = x_flat[b, c, index[k, l]]`` (0 for -1).
    """
    if x.dim() < 3 or index.dim() != 2:
        raise ValueError(f'scan_gather: x must be (B, C, H, W) or (B, C, P) and index '
                         f'(K, L\'), got x {tuple(x.shape)} and index {tuple(index.shape)}')
    if resolve_gather_backend(x, backend) == 'triton':
        return _triton_kernels().triton_scan_gather(x, index)
    flat = x.flatten(2)
    batch, channels, pixels = flat.shape
    routes, length = index.shape
    exporting = torch.onnx.is_in_onnx_export()  # maps built in the graph: one path for all
    if not exporting and (bool((index < -1).any()) or bool((index >= pixels).any())):
        raise ValueError(f'scan_gather: index addresses pixels outside a map of {pixels}')
    if exporting or bool((index < 0).any()):
        flat = torch.cat([flat, flat.new_zeros(batch, channels, 1)], dim=2)
        index = torch.where(index < 0, torch.full_like(index, pixels), index)
    out = flat.index_select(2, index.reshape(-1)).view(batch, channels, routes, length)
    return out.transpose(1, 2)


def scan_merge(ys: Tensor, index: Tensor, size: Tuple[int, ...], *,
               backend: Optional[str] = None) -> Tensor:
    """Adjoint of :func:`scan_gather`: sum every route's output back onto its pixels.

    Args:
        ys: (B, K, C, L') route outputs (any strides).
        index: (K, L') the map used by :func:`scan_gather`.
        size: spatial size of the result, ``(H, W)`` or ``(P,)``.
        backend: None (Triton for CUDA tensors when available), 'torch' or 'triton'.

    Returns:
        (B, C, *size): ``y[b, c, p] = sum over (k, l) with index[k, l] == p``.
    """
    if ys.dim() != 4:
        raise ValueError(f'scan_merge: ys must be (B, K, C, L\'), got {tuple(ys.shape)}')
    if resolve_gather_backend(ys, backend) == 'triton':
        return _triton_kernels().triton_scan_merge(ys, index, tuple(size))
    batch, routes, channels, length = ys.shape
    if tuple(index.shape) != (routes, length):
        raise ValueError(f'scan_merge: ys has {routes} routes of length {length} but the '
                         f'index is {tuple(index.shape)}')
    exporting = torch.onnx.is_in_onnx_export()  # traced sizes: no int(), one path for all
    pixels = 1
    for s in size:
        pixels = pixels * (s if exporting else int(s))
    src = ys.transpose(1, 2).reshape(batch, channels, routes * length)
    flat_index = index.reshape(-1)
    if exporting:
        # ScatterElements(reduction='add'): correct for routes that visit a pixel more
        # than once (index_add_'s ONNX lowering is not). Padding steps land in pixel P.
        flat_index = torch.where(flat_index < 0, torch.full_like(flat_index, pixels),
                                 flat_index)
        index3 = flat_index.reshape(1, 1, -1).expand(batch, channels, -1)
        out = ys.new_zeros(batch, channels, pixels + 1).scatter_add(2, index3, src)
        out = out[:, :, :pixels]
    elif bool((flat_index < 0).any()):
        flat_index = torch.where(flat_index < 0, torch.full_like(flat_index, pixels),
                                 flat_index)
        out = ys.new_zeros(batch, channels, pixels + 1).index_add(2, flat_index, src)
        out = out[:, :, :pixels]
    else:
        out = ys.new_zeros(batch, channels, pixels).index_add(2, flat_index, src)
    return out.view(batch, channels, *size)
