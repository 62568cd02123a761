"""``selective_scan_routes``: the routes of a scan pattern read from one token-major map,
scanned, and summed back into one -- gather, scan and merge as one function.

For an index map ``index`` (K, L) (:mod:`mmssm.ops.scan_patterns`: step ``l`` of route
``k`` visits token ``index[k, l]``, -1 a padding step that reads zero) and a map
``x`` (B, T, E) with its per-token projections::

    u_k[b, e, l]   = x[b, index[k, l], e]                 (0 where index is -1)
    low_k, B_k, C_k likewise from delta_lowrank, B, C     (B, K, R or N, T)
    y_k            = selective_scan_lowrank(u_k, low_k, ...)   channel rows k*E + e
    out[b, t, e]   = sum over k and l with index[k, l] = t of y_k[b, e, l]

which is ``merge_routes(scan(gather_routes(x)))`` with ``x_proj`` applied per token
instead of per gathered step (it is a per-token linear map, so the two agree). With
``merge=False`` the route outputs are returned token-major per step instead,
``out[b, k, l, e] = y_k[b, e, l]`` (B, K, L, E), for a caller that normalises every step
before merging (MSVMamba); :func:`merge_token_routes` then sums them onto the tokens.
With ``rows_by_step=True`` ``delta_lowrank``, ``B`` and ``C`` are given per route step
instead, (B, K, R or N, L), and used as given at every step (padding steps included):
for routes that each read only part of the map (EfficientVMamba's 'atrous' sub-lattices,
a quarter each), where projecting every token once per route would be K times the work
of projecting each route's own steps.

Two implementations of this one function:

* **composite** (any device and dtype, autograd): the gathers, one grouped
  :func:`~mmssm.ops.selective_scan_lowrank` and an index-add, as torch ops;
* **fused** (``mmssm._C.fwd_routes``, csrc/selective_scan/cpu/scan_cpu_kernels.h,
  "routed forward"): CPU, float32, inference (no autograd graph), outside autocast,
  tracing and export; and also where a graph is built
  (:class:`~mmssm.ops.kernels.SelectiveScanRoutesFn`: ``fwd_routes_saved`` and its
  adjoint ``bwd_routes``, same file, "routed backward"). Each step of a route is one
  vector load of a token's channels and
  its output one vector add into that token's row, so the K gathered copies of the map,
  the merge's flips / transposes / adds and the per-route projection of the gathered
  copies are never formed. Its results equal the composite's up to rounding (the routes
  are summed in order k = 0, 1, ...), and so do its gradients.

The fused path follows the selective-scan backend choice (``backend`` /
:func:`~mmssm.ops.scan_backend` / ``MMSSM_SCAN_BACKEND``).
"""
from typing import Optional

import torch

from .kernels import route_step_rows
from .scan_patterns import _has_padding
from .selective_scan import (builds_graph, cpu_kernel_applies, fused_inference_applies,
                             selective_scan_lowrank)

Tensor = torch.Tensor


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _check(name: str, t, shape, dtype=None) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shape):
        raise ValueError(f'selective_scan_routes: {name} must be {tuple(shape)}, got '
                         f'{_shape(t)}')
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f'selective_scan_routes: {name} has dtype {t.dtype}, expected '
                        f'{dtype} (like x)')


def routed_training_applies(tensors, backend: Optional[str] = None) -> bool:
    """Whether :func:`selective_scan_routes` runs for ``tensors`` (None entries ignored)
    as the fused routed forward and backward
    (:class:`~mmssm.ops.kernels.SelectiveScanRoutesFn`): all float32, an autograd graph is
    built through them, and the CPU kernels apply (:func:`~mmssm.ops.selective_scan.
    cpu_kernel_applies`: no autocast, trace or export)."""
    tensors = [t for t in tensors if t is not None]
    if any(t.dtype != torch.float32 for t in tensors):
        return False
    if not builds_graph(tensors):
        return False
    return cpu_kernel_applies(tensors[0].device, backend, 'bwd_routes')


def route_tokens(x: Tensor, index: Tensor) -> Tensor:
    """The tokens the routes of ``index`` (K, L) read from ``x`` (B, T, E), in step order:
    (B, K, L, E), zero at padding steps (-1) -- one copy of a token's channels per step
    (differentiable: its gradient sums back onto the tokens)."""
    index = index.long()
    shape = (x.shape[0], *index.shape, x.shape[2])
    # (index_select copies whole rows: 4x faster than x[:, index] here)
    if not _has_padding(index, x.shape[1]):  # (checked once per cached index map)
        return x.index_select(1, index.reshape(-1)).view(shape)
    steps = x.index_select(1, index.clamp(min=0).reshape(-1)).view(shape)
    # (in place on index_select's fresh output, whose backward does not read it)
    return steps.mul_((index >= 0)[None, :, :, None].to(x.dtype))


def merge_token_routes(ys: Tensor, index: Tensor, tokens: int) -> Tensor:
    """Token-major route outputs (B, K, L, E) summed onto the tokens of ``index`` (K, L):
    (B, T, E), padding steps (-1) dropped -- the merge of token-major sequences."""
    if ys.dim() != 4 or tuple(ys.shape[1:3]) != tuple(index.shape):
        raise ValueError(f'merge_token_routes: ys must be (B, K, L, E) with (K, L) = '
                         f'{tuple(index.shape)}, got {_shape(ys)}')
    index = index.long()
    batch, routes, length, channels = ys.shape
    out = ys.new_zeros(batch, tokens, channels)
    if not _has_padding(index, tokens):  # (checked once per cached index map)
        return out.index_add_(1, index.reshape(-1), ys.reshape(batch, routes * length, -1))
    valid = index >= 0
    return out.index_add_(1, index[valid], ys[:, valid])


def selective_scan_routes(x: Tensor, index: Tensor, delta_lowrank: Tensor,
                          delta_weight: Tensor, A: Tensor, B: Tensor, C: Tensor,
                          D: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None,
                          delta_softplus: bool = False, merge: bool = True, *,
                          rows_by_step: bool = False,
                          backend: Optional[str] = None) -> Tensor:
    """Gather, scan and merge the K routes of ``index`` (see the module docstring).

    Args:
        x: (B, T, E) token-major map, any strides.
        index: (K, L) integer index map, entries in [-1, T).
        delta_lowrank: (B, K, R, T) per-token low-rank delta rows, x's dtype.
        delta_weight: (K*E, R).
        A: (K*E, N); D, delta_bias: (K*E,) or None (as for
            :func:`~mmssm.ops.selective_scan`).
        B, C: (B, K, N, T) per token, x's dtype.
        delta_softplus: apply softplus to delta + delta_bias.
        merge: sum the routes onto the tokens (else return them per step).
        rows_by_step: delta_lowrank, B and C are (B, K, R or N, L), one row per route
            step (read as given, padding steps included), instead of per token.
        backend: selective-scan backend name or None.

    Returns:
        (B, T, E): the route outputs summed per token; with ``merge=False`` (B, K, L, E).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f'selective_scan_routes: x must be (B, T, E), got {_shape(x)}')
    if (not isinstance(index, torch.Tensor) or index.dim() != 2
            or index.dtype not in (torch.int32, torch.int64)):
        raise ValueError(f'selective_scan_routes: index must be a (K, L) integer tensor, got '
                         f'{_shape(index)}'
                         + (f' of {index.dtype}' if isinstance(index, torch.Tensor) else ''))
    batch, tokens, channels = x.shape
    routes, length = index.shape
    per, per_name = (length, 'L') if rows_by_step else (tokens, 'T')  # rows per step/token
    if not isinstance(delta_lowrank, torch.Tensor) or delta_lowrank.dim() != 4:
        raise ValueError(f'selective_scan_routes: delta_lowrank must be (B, K, R, '
                         f'{per_name}) = ({batch}, {routes}, R, {per}), got '
                         f'{_shape(delta_lowrank)}')
    rank = delta_lowrank.shape[2]
    if not isinstance(A, torch.Tensor) or A.dim() != 2:
        raise ValueError(f'selective_scan_routes: A must be (K*E, N) = '
                         f'({routes * channels}, N), got {_shape(A)}')
    dstate = A.shape[1]
    _check('delta_lowrank', delta_lowrank, (batch, routes, rank, per), x.dtype)
    _check('delta_weight', delta_weight, (routes * channels, rank))
    _check('B', B, (batch, routes, dstate, per), x.dtype)
    _check('C', C, (batch, routes, dstate, per), x.dtype)
    if index.device != x.device:
        raise ValueError(f'selective_scan_routes: index is on {index.device} but x is on '
                         f'{x.device}')
    tensors = (x, delta_lowrank, delta_weight, A, B, C, D, delta_bias)
    if fused_inference_applies(tensors, backend, 'fwd_routes'):
        from .kernels import load_backend
        index = index.long()
        padded = _has_padding(index, tokens)
        low = delta_lowrank
        if not rows_by_step:
            # the per-token rows in route order once, not once per channel tile
            low, B, C = (route_step_rows(t, index, padded) for t in (low, B, C))
        return load_backend('cpu').fwd_routes(x, index, low, delta_weight, A, B, C, D,
                                              delta_bias, bool(delta_softplus), bool(merge),
                                              True)
    if routed_training_applies(tensors, backend):
        from .kernels import SelectiveScanRoutesFn
        index = index.long()
        return SelectiveScanRoutesFn.apply(x, index, delta_lowrank, delta_weight, A, B, C, D,
                                           delta_bias, bool(delta_softplus),
                                           _has_padding(index, tokens), bool(merge),
                                           bool(rows_by_step))
    # (the fused paths above have checked the entries)
    if index.numel() and (int(index.min()) < -1 or int(index.max()) >= tokens):
        raise ValueError(f'selective_scan_routes: index entries must be in [-1, {tokens}) '
                         f'(T of x {_shape(x)}), got [{int(index.min())}, '
                         f'{int(index.max())}]')
    index = index.long()
    us = route_tokens(x, index)  # (B, K, L, E)
    if not rows_by_step:
        delta_lowrank, B, C = (route_step_rows(t, index, True) for t in (delta_lowrank, B, C))
    ys = selective_scan_lowrank(
        us.permute(0, 1, 3, 2).reshape(batch, routes * channels, length),
        delta_lowrank, delta_weight, A, B, C, D,
        delta_bias=delta_bias, delta_softplus=delta_softplus, backend=backend)
    ys = ys.view(batch, routes, channels, length).permute(0, 1, 3, 2)  # (B, K, L, E)
    return merge_token_routes(ys, index, tokens) if merge else ys.contiguous()
