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
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Optional, Tuple

import torch

from .scan_lowering import scan_gather_export, scan_merge_export

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

    @property
    def export_segments(self) -> Optional[int]:
        """``S`` such that every route is ``S`` equal parts in each of which a pixel
        appears at most once (every route has ``S`` segments, all of one step), or None.
        The export merge (:func:`mmssm.ops.scan_lowering.scan_merge_export`) then inverts
        each part with a Gather of whole rows instead of a ScatterElements."""
        counts = {len(route) for route in self.routes}
        steps = {seg.step for route in self.routes for seg in route}
        return counts.pop() if len(counts) == 1 and len(steps) == 1 else None

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
        pattern = get_scan_pattern(kind)
        index = pattern.build_index(h, w, device)
        index.export_segments = pattern.export_segments  # read by the export merge
        return index
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


_index_checks: Dict[Tuple[int, int], tuple] = {}  # (id, pixels) -> (ref, padded, version)


def _has_padding(index: Tensor, pixels: int) -> bool:
    """Whether ``index`` has padding steps (-1); raises if it addresses pixels outside a
    map of ``pixels``. The answer is kept per index tensor (the maps are cached, so a
    model pays for the check -- a host synchronisation -- once per size, not per call)."""
    key = (id(index), pixels)
    known = _index_checks.get(key)
    if known is not None and known[0]() is index and index._version == known[2]:
        return known[1]
    if bool((index < -1).any()) or bool((index >= pixels).any()):
        raise ValueError(f'scan pattern: index {tuple(index.shape)} addresses pixels outside '
                         f'a map of {pixels}')
    padded = bool((index < 0).any())
    if len(_index_checks) > 1024:  # dead entries of freed maps
        for k in [k for k, v in _index_checks.items() if v[0]() is None]:
            del _index_checks[k]
    _index_checks[key] = (weakref.ref(index), padded, index._version)
    return padded


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
    if torch.onnx.is_in_onnx_export():  # maps built in the graph: one path for all
        return scan_gather_export(x, index)
    flat = x.flatten(2)
    batch, channels, pixels = flat.shape
    routes, length = index.shape
    if _has_padding(index, pixels):
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
    if torch.onnx.is_in_onnx_export():  # traced sizes; index_add_'s ONNX lowering
        # does not accumulate repeated pixels, the export merge does
        return scan_merge_export(ys, index, size, getattr(index, 'export_segments', None))
    pixels = 1
    for s in size:
        pixels = pixels * int(s)
    src = ys.transpose(1, 2).reshape(batch, channels, routes * length)
    flat_index = index.reshape(-1)
    if _has_padding(index, pixels):
        flat_index = torch.where(flat_index < 0, torch.full_like(flat_index, pixels),
                                 flat_index)
        out = ys.new_zeros(batch, channels, pixels + 1).index_add(2, flat_index, src)
        out = out[:, :, :pixels]
    else:
        out = ys.new_zeros(batch, channels, pixels).index_add(2, flat_index, src)
    return out.view(batch, channels, *size)


# ------------------------------------------------------------------ permutation patterns
# A pattern whose every route is the whole map read row- or column-major, possibly
# reversed (ScanPattern.is_permutation: 'cross', 'bidirectional', 'row'), needs no index
# map at all: a route is the map itself, its transpose, or one of those reversed. On the
# torch path gather_routes / merge_routes below move the data with copies, transposes and
# flips -- sequential memory access, no index validation (no host synchronisation), and a
# contiguous (B, K, C, L) result that the scan reads without another copy. They are an
# autograd pair (each one's backward is the other), exactly the adjoints of
# scan_gather / scan_merge with the pattern's index map, which every other case (padded or
# concatenated routes, Triton on CUDA, ONNX export) still uses.


def _oriented(x: Tensor, order: str) -> Tensor:
    """The (B, C, h, w) map read in ``order``: itself ('row') or transposed ('col')."""
    return x if order == 'row' else x.transpose(2, 3)


def _permutation_gather(x: Tensor, pattern: 'ScanPattern') -> Tensor:
    """(B, C, H, W) -> contiguous (B, K, C, H*W) for a permutation pattern."""
    batch, channels, height, width = x.shape
    length = height * width
    out = x.new_empty(batch, pattern.num_routes, channels, length)
    forward_route = {}  # order -> route k that holds the un-reversed read
    for k, (seg, ) in enumerate(pattern.routes):
        if not seg.reverse and seg.order not in forward_route:
            src = _oriented(x, seg.order)
            out[:, k].view(batch, channels, *src.shape[2:]).copy_(src)
            forward_route[seg.order] = k
    for k, (seg, ) in enumerate(pattern.routes):
        j = forward_route.get(seg.order)
        if j == k:
            continue
        if j is None:  # no forward read of this order: flip both axes of the map
            src = _oriented(x, seg.order)
            if seg.reverse:
                src = src.flip(2, 3)
            out[:, k].view(batch, channels, *src.shape[2:]).copy_(src)
        elif seg.reverse:
            out[:, k] = out[:, j].flip(-1)
        else:  # the same read twice
            out[:, k] = out[:, j]
    return out


def _permutation_merge(ys: Tensor, pattern: 'ScanPattern', height: int,
                       width: int, channels_last: bool = True) -> Tensor:
    """(B, K, C, H*W) -> (B, C, H, W): the sum of every route's output on its pixels,
    in channels-last memory (a map, for the channel LayerNorm that follows) or contiguous
    (a sequence: its token-major consumer reads the transposed matrix for free)."""
    batch, _, channels, _ = ys.shape
    terms = {}  # order -> [(B, C, H, W) views of that order's route outputs, un-reversed]
    for k, (seg, ) in enumerate(pattern.routes):
        y = ys[:, k].flip(-1) if seg.reverse else ys[:, k]
        dims = (height, width) if seg.order == 'row' else (width, height)
        terms.setdefault(seg.order, []).append(
            _oriented(y.reshape(batch, channels, *dims), seg.order))
    # The last pass writes channels-last (B, H, W, C) memory for a map: what a channel
    # LayerNorm (LayerNorm2d), the usual next op, reads without a copy.
    out = torch.empty((batch, channels, height, width), dtype=ys.dtype, device=ys.device,
                      memory_format=torch.channels_last if channels_last
                      else torch.contiguous_format)
    # Each order's routes are summed in its own layout; the last addition writes `out`.
    if len(terms) == 1:
        (group, ) = terms.values()
        if len(group) == 1:
            return out.copy_(group[0])
        return torch.add(sum(group[1:-1], group[0]), group[-1], out=out)
    first, second = (sum(group[1:], group[0]) for group in terms.values())  # row, col
    return torch.add(first, second, out=out)


class _GatherRoutes(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, pattern):
        ctx.pattern = pattern
        ctx.size = x.shape[2:]
        return _permutation_gather(x, pattern)

    @staticmethod
    def backward(ctx, grad):
        return _MergeRoutes.apply(grad, ctx.pattern, *ctx.size, True), None


class _MergeRoutes(torch.autograd.Function):

    @staticmethod
    def forward(ctx, ys, pattern, height, width, channels_last):
        ctx.pattern = pattern
        return _permutation_merge(ys, pattern, height, width, channels_last)

    @staticmethod
    def backward(ctx, grad):
        return _GatherRoutes.apply(grad, ctx.pattern), None, None, None, None


def _fast_path(t: Tensor, pattern: 'ScanPattern', backend: Optional[str]) -> bool:
    return (pattern.is_permutation and not torch.onnx.is_in_onnx_export()
            and resolve_gather_backend(t, backend) == 'torch')


def gather_routes(x: Tensor, pattern, *, backend: Optional[str] = None) -> Tensor:
    """:func:`scan_gather` of ``pattern``'s index map over ``x``'s map.

    Args:
        x: (B, C, H, W) or (B, C, P) (a 1 x P map) features, any strides.
        pattern: a :class:`ScanPattern` or the name of one.
        backend: as for :func:`scan_gather`.

    Returns:
        (B, K, C, L'); contiguous for permutation patterns on the torch path, which
        skip the index map (flips and transposes, see above).
    """
    pattern = get_scan_pattern(pattern) if isinstance(pattern, str) else pattern
    if x.dim() not in (3, 4):
        raise ValueError(f'gather_routes: x must be (B, C, H, W) or (B, C, P), got '
                         f'{tuple(x.shape)}')
    size = tuple(x.shape[2:]) if x.dim() == 4 else (1, x.shape[2])
    if _fast_path(x, pattern, backend):
        if pattern.routes == ((Segment('row'), ), ):  # the map itself: a view if it can be
            return x.reshape(x.shape[0], 1, x.shape[1], -1)
        return _GatherRoutes.apply(x.reshape(*x.shape[:2], *size), pattern)
    return scan_gather(x, pattern.index(*size, x.device), backend=backend)


def merge_routes(ys: Tensor, pattern, size: Tuple[int, ...], *,
                 backend: Optional[str] = None) -> Tensor:
    """:func:`scan_merge` of ``pattern``'s index map: (B, K, C, L') -> (B, C, *size),
    ``size`` = (H, W) or (P,) (a 1 x P map)."""
    pattern = get_scan_pattern(pattern) if isinstance(pattern, str) else pattern
    if ys.dim() != 4 or ys.shape[1] != pattern.num_routes:
        raise ValueError(f'merge_routes: ys must be (B, {pattern.num_routes}, C, L\') for '
                         f'pattern {pattern.name!r}, got {tuple(ys.shape)}')
    height, width = (size[0], size[1]) if len(size) == 2 else (1, size[0])
    if _fast_path(ys, pattern, backend):
        if ys.shape[3] != height * width:
            raise ValueError(f'merge_routes: routes of length {ys.shape[3]} do not cover a '
                             f'{height}x{width} map')
        if pattern.routes == ((Segment('row'), ), ):
            return ys.reshape(ys.shape[0], ys.shape[2], *size)
        merged = _MergeRoutes.apply(ys, pattern, int(height), int(width), len(size) == 2)
        return merged if len(size) == 2 else merged.reshape(ys.shape[0], ys.shape[2], *size)
    return scan_merge(ys, pattern.index(height, width, ys.device), size, backend=backend)
