"""Vim's causal depthwise convolution + SiLU over the two directions of a sequence, and
the merge + gate on the way back.

``bidirectional_conv_silu(x, weight, bias)`` maps x (B, D, L) to the (B, 2, D, L) route
layout of :func:`~mmssm.ops.scan_patterns.gather_routes` (``'bidirectional'``): route 0
reads x forward, route 1 reversed in time, and each route gets its own causal
depthwise filter (weight rows ``[0, D)`` and ``[D, 2D)``, K taps), bias and SiLU:

    out[:, k] = silu(conv1d(route_k(x), weight_k, bias_k, padding=K-1)[..., :L])

Two implementations of this one function:

* **composite** (any device and dtype, autograd, tracing, ONNX export): the route gather,
  one grouped ``F.conv1d`` over 2D channels, ``F.silu`` -- four passes over the data;
* **fused** (``mmssm._C.route_conv_silu``, csrc/selective_scan/route_conv.h): CPU,
  float32, outside autocast and autograd (inference): one pass that reads x once and
  writes the routes once. On one core it takes Vim-Ti's conv + SiLU from about 9.5 ms of
  a 224 x 224 forward to about 1 ms. Its results equal the composite's up to rounding.

:func:`bidirectional_merge_gate` is the way back (the two routes' outputs summed per
token, gated by ``silu(z)`` and scaled), fused and composite alike.

The compiled paths follow the selective-scan backend choice (``backend`` /
:func:`~mmssm.ops.scan_backend` / ``MMSSM_SCAN_BACKEND``): ``'torch'`` keeps everything
in PyTorch.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .scan_patterns import gather_routes, merge_routes
from .selective_scan import fused_inference_applies

Tensor = torch.Tensor


def _as_taps(weight: Tensor, channels: int) -> Tensor:
    """(2D, 1, K) (``nn.Conv1d``'s grouped weight) or (2D, K) -> (2D, K)."""
    taps = weight[:, 0] if weight.dim() == 3 and weight.shape[1] == 1 else weight
    if taps.dim() != 2 or taps.shape[0] != 2 * channels or taps.shape[1] < 1:
        raise ValueError(f'bidirectional_conv_silu: weight must be (2*D, 1, K) or (2*D, K) '
                         f'with D = {channels}, got {tuple(weight.shape)}')
    return taps


def bidirectional_conv_silu(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *,
                            backend: Optional[str] = None) -> Tensor:
    """Per-direction causal depthwise conv + bias + SiLU (see the module docstring).

    Args:
        x: (B, D, L) sequence, channel-major, any strides.
        weight: (2D, 1, K) or (2D, K): rows ``[0, D)`` filter the forward route, rows
            ``[D, 2D)`` the reversed one.
        bias: (2D,) or None.
        backend: selective-scan backend name or None (see the module docstring).

    Returns:
        (B, 2, D, L) contiguous: route 0 in natural time order, route 1 in reversed order
        (as the selective scan reads them).
    """
    if x.dim() != 3:
        raise ValueError(f'bidirectional_conv_silu: x must be (B, D, L), got '
                         f'{tuple(x.shape)}')
    batch, channels, length = x.shape
    taps = _as_taps(weight, channels)
    if bias is not None and tuple(bias.shape) != (2 * channels, ):
        raise ValueError(f'bidirectional_conv_silu: bias must be ({2 * channels},), got '
                         f'{tuple(bias.shape)}')
    if fused_inference_applies((x, taps, bias), backend, 'route_conv_silu'):
        from .kernels import load_backend
        return load_backend('cpu').route_conv_silu(x, taps, bias)
    routes = gather_routes(x, 'bidirectional')  # (B, 2, D, L)
    width = taps.shape[1]
    u = F.conv1d(routes.reshape(batch, 2 * channels, length), taps[:, None], bias,
                 padding=width - 1, groups=2 * channels)
    return F.silu(u[..., :length]).view(batch, 2, channels, length)


def bidirectional_merge_gate(ys: Tensor, z: Optional[Tensor] = None, scale: float = 1.0, *,
                             backend: Optional[str] = None) -> Tensor:
    """The way back from the two routes: ``(ys[:, 0] + ys[:, 1] reversed in time) *
    silu(z) * scale`` -- :func:`~mmssm.ops.scan_patterns.merge_routes` of the
    ``'bidirectional'`` pattern, then the gate (Vim's ``y * silu(z)``, applied once to the
    sum: it multiplies both directions at the same token) and the scale (``divide_out``).

    Fused into one pass (``mmssm._C.route_merge_gate``) under the same conditions as
    :func:`bidirectional_conv_silu`; composite otherwise.

    Args:
        ys: (B, 2, D, L) route outputs, route 1 in reversed time order.
        z: (B, D, L) gate in natural order, or None.
        scale: a constant factor.

    Returns:
        (B, D, L) contiguous.
    """
    if ys.dim() != 4 or ys.shape[1] != 2:
        raise ValueError(f'bidirectional_merge_gate: ys must be (B, 2, D, L), got '
                         f'{tuple(ys.shape)}')
    batch, _, channels, length = ys.shape
    if z is not None and tuple(z.shape) != (batch, channels, length):
        raise ValueError(f'bidirectional_merge_gate: z must be {(batch, channels, length)} '
                         f'like one route of ys {tuple(ys.shape)}, got {tuple(z.shape)}')
    if fused_inference_applies((ys, z), backend, 'route_merge_gate'):
        from .kernels import load_backend
        return load_backend('cpu').route_merge_gate(ys, z, float(scale))
    merged = merge_routes(ys, 'bidirectional', (length, ))
    if z is None:
        return merged * scale if scale != 1.0 else merged
    gate = F.silu(z)
    if scale != 1.0:
        gate = gate.mul_(scale)  # (silu keeps its input for the backward, not its output)
    return merged * gate
