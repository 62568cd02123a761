"""Triton kernels for :func:`~mmssm.ops.scan_patterns.scan_gather` and
:func:`~mmssm.ops.scan_patterns.scan_merge`.

One pair of kernels serves every scan pattern, because both are driven by the pattern's
index map (K, L') (-1 = zero padding) instead of a hard-coded route geometry:

* gather: ``out[b, k, c, l] = x[b, c, index[k, l]]`` -- reads the map (any strides:
  NCHW, channels-last, or a transposed (B, C, L) sequence) and writes the contiguous
  (B, K, C, L') scan layout in one pass;
* merge: ``out[b, c, p] = sum over the (k, l) with index[k, l] == p of ys[b, k, c, l]``
  -- one pass over the (any-strided) route outputs. It is deterministic and needs no
  atomics: every pixel owns a short, fixed list of the flat scan positions that visit it
  (the *inverse map*, (M, P) with M the largest number of visits of one pixel: 4 for
  the cross scan, 3 for MSVMamba's low-resolution route, 2 bidirectional, 1 row-major
  and atrous; -1 pads pixels visited fewer times), summed in a fixed order in fp32.

Each kernel is the other's adjoint, so the autograd Functions use one as the backward
of the other. The per-index metadata (validated int32 copy of the map and its inverse)
is computed once per index tensor and cached, so a steady-state call launches exactly
one kernel and never synchronises with the host.

Grid: (position blocks, channel blocks, batch [x routes]); a program handles a
BLOCK_C x BLOCK_L tile; offsets are formed in int64 (no 2^31 overflow on large maps).
"""
from collections import OrderedDict
from typing import NamedTuple, Tuple

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BLOCK_C = 8
_MAX_BLOCK_L = 128
_NUM_WARPS = 4


@triton.jit
def _gather_kernel(x_ptr, index_ptr, out_ptr, channels, length, routes,
                   stride_xb, stride_xc, stride_xp,
                   BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_bk = tl.program_id(2)  # b * routes + k
    batch = pid_bk // routes
    route = pid_bk - batch * routes
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_l = offs_l < length
    mask_c = offs_c < channels
    pixel = tl.load(index_ptr + route * length + offs_l, mask=mask_l, other=-1)
    hit = pixel >= 0
    src = (x_ptr + batch.to(tl.int64) * stride_xb
           + offs_c.to(tl.int64)[:, None] * stride_xc
           + tl.where(hit, pixel, 0).to(tl.int64)[None, :] * stride_xp)
    values = tl.load(src, mask=mask_c[:, None] & hit[None, :], other=0.0)
    dst = (out_ptr + (pid_bk.to(tl.int64) * channels + offs_c.to(tl.int64))[:, None] * length
           + offs_l[None, :])
    tl.store(dst, values, mask=mask_c[:, None] & mask_l[None, :])


@triton.jit
def _merge_kernel(ys_ptr, inverse_ptr, out_ptr, channels, pixels, length,
                  stride_yb, stride_yk, stride_yc, stride_yl,
                  HITS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_p = offs_p < pixels
    mask_c = offs_c < channels
    base = ys_ptr + batch * stride_yb + offs_c.to(tl.int64)[:, None] * stride_yc
    acc = tl.full((BLOCK_C, BLOCK_P), 0.0, tl.float32)
    for m in tl.static_range(HITS):
        # flat scan position k * L' + l of the m-th visit of each pixel, -1 if none
        flat = tl.load(inverse_ptr + m * pixels + offs_p, mask=mask_p, other=-1)
        hit = flat >= 0
        flat = tl.where(hit, flat, 0)
        route = flat // length
        step = flat - route * length
        src = base + (route.to(tl.int64) * stride_yk + step.to(tl.int64) * stride_yl)[None, :]
        acc += tl.load(src, mask=mask_c[:, None] & hit[None, :], other=0.0).to(tl.float32)
    dst = (out_ptr + (batch * channels + offs_c.to(tl.int64))[:, None] * pixels
           + offs_p[None, :])
    tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_p[None, :])


class IndexPlan(NamedTuple):
    """Validated device metadata of one index map over a map of ``pixels`` pixels."""
    index: Tensor    # (K, L') int32, contiguous
    inverse: Tensor  # (M, P) int32: flat positions k * L' + l visiting each pixel, -1 pad
    hits: int        # M


_PLAN_CACHE_SIZE = 512
# key -> (index tensor kept alive so its memory cannot be reused, its version, plan)
_plans: 'OrderedDict[tuple, Tuple[Tensor, int, IndexPlan]]' = OrderedDict()


def build_plan(index: Tensor, pixels: int, device: torch.device) -> IndexPlan:
    """Validate ``index`` (K, L') against a map of ``pixels`` pixels and compute its
    int32 copy and inverse map on ``device``. Raises ValueError on a bad map."""
    if index.dim() != 2 or index.dtype.is_floating_point or index.is_complex():
        raise ValueError(f'scan pattern: index must be an integer (K, L\') tensor, got '
                         f'{tuple(index.shape)} {index.dtype}')
    if pixels >= 2**31 or index.numel() >= 2**31:
        raise ValueError(f'scan pattern: maps of {pixels} pixels / index maps of '
                         f'{index.numel()} steps exceed the int32 index range')
    flat = index.to(device=device, dtype=torch.long).reshape(-1)
    if flat.numel() and bool(((flat < -1) | (flat >= pixels)).any()):
        raise ValueError(f'scan pattern: index {tuple(index.shape)} addresses pixels outside '
                         f'a map of {pixels} (valid: -1 .. {pixels - 1})')
    positions = torch.nonzero(flat >= 0).flatten()
    targets = flat[positions]
    counts = torch.bincount(targets, minlength=pixels)
    hits = int(counts.max()) if pixels else 0
    inverse = torch.full((max(hits, 1), pixels), -1, dtype=torch.int32, device=device)
    if positions.numel():
        # Stable sort by pixel keeps each pixel's visits in increasing flat position,
        # so the merge sums them in a fixed order (deterministic).
        order = torch.argsort(targets, stable=True)
        targets, positions = targets[order], positions[order]
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(targets.numel(), device=device) - starts[targets]
        inverse[rank, targets] = positions.to(torch.int32)
    return IndexPlan(index.to(device=device, dtype=torch.int32).contiguous(), inverse,
                     max(hits, 1))


def index_plan(index: Tensor, pixels: int, device: torch.device) -> IndexPlan:
    """:func:`build_plan`, cached per index tensor (its memory, view geometry and
    version counter), map size and device."""
    key = (str(device), index.device.type, index.data_ptr(), index.storage_offset(),
           tuple(index.shape), tuple(index.stride()), index.dtype, int(pixels))
    entry = _plans.get(key)
    if entry is not None and entry[1] == index._version:
        _plans.move_to_end(key)
        return entry[2]
    plan = build_plan(index, pixels, device)
    _plans[key] = (index, index._version, plan)
    if len(_plans) > _PLAN_CACHE_SIZE:
        _plans.popitem(last=False)
    return plan


_MAX_GRID_YZ = 65535  # CUDA limit of grid dimensions 1 and 2


def _block(n: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(max(int(n), 1))))


def _check_grid(grid: Tuple[int, int, int], what: str) -> None:
    if grid[1] > _MAX_GRID_YZ or grid[2] > _MAX_GRID_YZ:
        raise ValueError(f'{what}: {grid[1] * _BLOCK_C} channels / {grid[2]} batch x routes '
                         f'exceed the launch grid ({_MAX_GRID_YZ} blocks per dimension); '
                         f'split the batch or use backend=\'torch\'')


def gather_forward(x: Tensor, plan: IndexPlan) -> Tensor:
    """(B, C, P) any strides -> (B, K, C, L') contiguous."""
    batch, channels, _ = x.shape
    routes, length = plan.index.shape
    out = x.new_empty(batch, routes, channels, length)
    if out.numel() == 0:
        return out
    block_l = _block(length, _MAX_BLOCK_L)
    grid = (triton.cdiv(length, block_l), triton.cdiv(channels, _BLOCK_C), batch * routes)
    _check_grid(grid, 'scan_gather')
    _gather_kernel[grid](x, plan.index, out, channels, length, routes,
                         x.stride(0), x.stride(1), x.stride(2),
                         BLOCK_C=_BLOCK_C, BLOCK_L=block_l, num_warps=_NUM_WARPS)
    return out


def merge_forward(ys: Tensor, plan: IndexPlan, pixels: int) -> Tensor:
    """(B, K, C, L') any strides -> (B, C, P) contiguous."""
    batch, _, channels, length = ys.shape
    out = ys.new_empty(batch, channels, pixels)
    if out.numel() == 0:
        return out
    block_p = _block(pixels, _MAX_BLOCK_L)
    grid = (triton.cdiv(pixels, block_p), triton.cdiv(channels, _BLOCK_C), batch)
    _check_grid(grid, 'scan_merge')
    _merge_kernel[grid](ys, plan.inverse, out, channels, pixels, max(length, 1),
                        ys.stride(0), ys.stride(1), ys.stride(2), ys.stride(3),
                        HITS=plan.hits, BLOCK_C=_BLOCK_C, BLOCK_P=block_p,
                        num_warps=_NUM_WARPS)
    return out


class ScanGather(torch.autograd.Function):
    """(B, C, P) -> (B, K, C, L'); backward = merge."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:
        pixels = x.shape[2]
        plan = index_plan(index, pixels, x.device)
        ctx.plan, ctx.pixels = plan, pixels
        return gather_forward(x, plan)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return ScanMerge.apply(grad_out, ctx.plan, ctx.pixels), None


class ScanMerge(torch.autograd.Function):
    """(B, K, C, L') -> (B, C, P); backward = gather. Takes a ready :class:`IndexPlan`
    (built by the caller, so the backward of gather can reuse its own)."""

    @staticmethod
    def forward(ctx, ys: Tensor, plan: IndexPlan, pixels: int) -> Tensor:
        ctx.plan = plan
        return merge_forward(ys, plan, pixels)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return _GatherWithPlan.apply(grad_out, ctx.plan), None, None


class _GatherWithPlan(torch.autograd.Function):
    """:class:`ScanGather` for a ready plan (the backward of merge)."""

    @staticmethod
    def forward(ctx, x: Tensor, plan: IndexPlan) -> Tensor:
        ctx.plan, ctx.pixels = plan, x.shape[2]
        return gather_forward(x, plan)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return ScanMerge.apply(grad_out, ctx.plan, ctx.pixels), None


def _check_dtype(t: Tensor, what: str) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f'{what}: the triton kernels support float32, float16 and '
                        f'bfloat16, got {t.dtype}')


def triton_scan_gather(x: Tensor, index: Tensor) -> Tensor:
    """Triton :func:`~mmssm.ops.scan_patterns.scan_gather`: (B, C, H, W) or (B, C, P)
    -> (B, K, C, L'), differentiable."""
    if x.dim() < 3:
        raise ValueError(f'scan_gather: x must be (B, C, H, W) or (B, C, P), got '
                         f'{tuple(x.shape)}')
    _check_dtype(x, 'scan_gather')
    return ScanGather.apply(x.flatten(2), index)


def triton_scan_merge(ys: Tensor, index: Tensor, size: Tuple[int, ...]) -> Tensor:
    """Triton :func:`~mmssm.ops.scan_patterns.scan_merge`: (B, K, C, L') ->
    (B, C, *size), differentiable."""
    if ys.dim() != 4 or index.dim() != 2 or tuple(index.shape) != tuple(ys.shape[1::2]):
        raise ValueError(f'scan_merge: ys {tuple(ys.shape)} must be (B, K, C, L\') with an '
                         f'index of shape (K, L\'), got index {tuple(index.shape)}')
    _check_dtype(ys, 'scan_merge')
    pixels = 1
    for s in size:
        pixels *= int(s)
    plan = index_plan(index, pixels, ys.device)
    out = ScanMerge.apply(ys, plan, pixels)
    return out.view(ys.shape[0], ys.shape[2], *size)
