"""The one selective-scan core shared by the VMamba-style backbones.

:class:`SelectiveScanRoutes` owns the per-route SSM parameters (named exactly as in the
official checkpoints) and scans K routes at once with :func:`mmssm.ops.selective_scan`,
each route being one group of B/C. :class:`SS2D` wraps it into the 2-D token mixer

    in_proj -> depthwise conv -> SiLU -> gather routes -> selective scan -> merge
            -> out_norm -> (x silu(z) gate) -> out_proj

where the scan pattern is an index map from :mod:`mmssm.ops.scan_patterns`
('cross' for VMamba, 'atrous' for EfficientVMamba, 'bidirectional' for MobileMamba).
MSVMamba's two-resolution mixer reuses :class:`SelectiveScanRoutes` directly.
"""
import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmssm.ops import selective_scan
from mmssm.ops.scan_patterns import (atrous_index, bidirectional_index, cross_scan_index,
                                     scan_gather, scan_merge)
from .common import LayerNorm2d, Linear2d

Tensor = torch.Tensor

SCAN_PATTERNS = {
    'cross': (4, cross_scan_index),
    'atrous': (4, atrous_index),
    'bidirectional': (2, lambda h, w, device=None: bidirectional_index(h * w, device)),
}


def inverse_softplus_dt(num: int, dt_min: float = 1e-3, dt_max: float = 0.1,
                        dt_floor: float = 1e-4) -> Tensor:
    """Time-step biases whose softplus is log-uniform in [dt_min, dt_max] (Mamba init)."""
    dt = torch.exp(torch.rand(num) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


class SelectiveScanRoutes(nn.Module):
    """Per-route SSM parameters and the grouped selective scan over K routes.

    Parameters (official names):
        x_proj_weight (K, R + 2N, E): per-route projection to [dt (R), B (N), C (N)].
        dt_projs_weight (K, E, R), dt_projs_bias (K, E): dt up-projection and bias
            (the bias is added inside the softplus).
        A_logs (K*E, N), Ds (K*E,): A = -exp(A_logs), skip weights; row k*E + e.

    Args:
        d_inner (int): E, channels scanned per route.
        d_state (int): N.
        dt_rank (int): R.
        num_routes (int): K.
        init (str): from-scratch initialisation: ``'v0'`` (S4D-real A, D = 1,
            dt bias log-uniform in [1e-3, 1e-1]) or ``'v2'`` (A = -1, D = 1,
            dt weights/biases 0.1 * U[0, 1), MobileMamba).
    """

    def __init__(self, d_inner: int, d_state: int, dt_rank: int, num_routes: int,
                 init: str = 'v0', dt_scale: float = 1.0):
        super().__init__()
        self.d_inner = d_inner
        self.d_state = d_state
        self.dt_rank = dt_rank
        self.num_routes = num_routes
        k, e, n, r = num_routes, d_inner, d_state, dt_rank
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, e))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, e, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, e))
        self.A_logs = nn.Parameter(torch.empty(k * e, n))
        self.Ds = nn.Parameter(torch.empty(k * e))
        self.reset_ssm_parameters(init, dt_scale)

    @torch.no_grad()
    def reset_ssm_parameters(self, init: str = 'v0', dt_scale: float = 1.0) -> None:
        bound = 1.0 / math.sqrt(self.d_inner)  # nn.Linear default for x_proj
        self.x_proj_weight.uniform_(-bound, bound)
        self.Ds.fill_(1.0)
        if init == 'v0':
            std = dt_scale / math.sqrt(self.dt_rank)
            self.dt_projs_weight.uniform_(-std, std)
            self.dt_projs_bias.copy_(
                inverse_softplus_dt(self.dt_projs_bias.numel()).view_as(self.dt_projs_bias))
            states = torch.arange(1, self.d_state + 1, dtype=torch.float32)
            self.A_logs.copy_(states.log().expand_as(self.A_logs))
        elif init == 'v2':
            self.dt_projs_weight.uniform_(0.0, 0.1)
            self.dt_projs_bias.uniform_(0.0, 0.1)
            self.A_logs.zero_()
        else:
            raise ValueError(f"unknown SSM init {init!r}; expected 'v0' or 'v2'")
        # No weight decay on the SSM's own "weights" in optimizers that honour it.
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True

    def scan_routes(self, xs: Tensor, first_route: int = 0) -> Tensor:
        """Scan routes ``first_route .. first_route + K' - 1`` of ``xs``.

        Args:
            xs: (B, K', E, L) route sequences.
            first_route: index of the parameter slot used by ``xs[:, 0]``.

        Returns:
            (B, K', E, L) scan outputs in ``xs.dtype``.
        """
        batch, routes, channels, length = xs.shape
        if channels != self.d_inner or first_route + routes > self.num_routes:
            raise ValueError(
                f'scan_routes: xs is {tuple(xs.shape)}, expected (B, K<={self.num_routes}, '
                f'{self.d_inner}, L) starting at route {first_route}')
        sl = slice(first_route, first_route + routes)
        rows = slice(first_route * channels, (first_route + routes) * channels)
        r, n = self.dt_rank, self.d_state
        proj = torch.einsum('bkel,kce->bkcl', xs, self.x_proj_weight[sl].to(xs.dtype))
        dt, b_proj, c_proj = torch.split(proj, [r, n, n], dim=2)
        dt = torch.einsum('bkrl,ker->bkel', dt, self.dt_projs_weight[sl].to(xs.dtype))
        dtype = xs.dtype
        ys = selective_scan(
            xs.reshape(batch, routes * channels, length),
            dt.reshape(batch, routes * channels, length).to(dtype),
            -torch.exp(self.A_logs[rows].float()),
            b_proj.to(dtype).contiguous(),
            c_proj.to(dtype).contiguous(),
            self.Ds[rows].float(),
            delta_bias=self.dt_projs_bias[sl].reshape(-1).float(),
            delta_softplus=True)
        return ys.view(batch, routes, channels, length)


class SS2D(SelectiveScanRoutes):
    """2-D selective-scan token mixer over an index-map scan pattern.

    Input and output are NCHW: (B, d_model, H, W).

    Args:
        d_model (int): C, input/output channels.
        d_inner (int): E, scanned channels (ssm_ratio * C).
        d_state (int): N.
        dt_rank (int): R.
        scan (str): 'cross' (VMamba, K=4), 'atrous' (EfficientVMamba, K=4) or
            'bidirectional' (MobileMamba, K=2).
        gated (bool): in_proj also produces a gate z; output *= silu(z).
        conv_bias (bool): bias of the depthwise conv (``conv2d``).
        conv_kernel (int): depthwise conv kernel size.
        projection (callable): ``projection(in_channels, out_channels)`` builds
            ``in_proj``/``out_proj``; defaults to bias-free :class:`Linear2d`.
        out_norm (callable): builds ``out_norm`` on E channels (NCHW);
            defaults to :class:`LayerNorm2d` with eps 1e-5.
        init (str): SSM init, see :class:`SelectiveScanRoutes`.
        dropout (float): dropout on the output.
    """

    def __init__(self,
                 d_model: int,
                 d_inner: int,
                 d_state: int,
                 dt_rank: int,
                 scan: str = 'cross',
                 gated: bool = False,
                 conv_bias: bool = False,
                 conv_kernel: int = 3,
                 projection: Optional[Callable[[int, int], nn.Module]] = None,
                 out_norm: Optional[Callable[[int], nn.Module]] = None,
                 init: str = 'v0',
                 dropout: float = 0.0):
        if scan not in SCAN_PATTERNS:
            raise ValueError(f'SS2D: unknown scan {scan!r}; choose from {sorted(SCAN_PATTERNS)}')
        num_routes, self_index = SCAN_PATTERNS[scan]
        super().__init__(d_inner, d_state, dt_rank, num_routes, init=init)
        self.d_model = d_model
        self.scan = scan
        self.gated = gated
        self._route_index = self_index
        projection = projection or (lambda cin, cout: Linear2d(cin, cout, bias=False))
        out_norm = out_norm or (lambda channels: LayerNorm2d(channels, eps=1e-5))
        self.out_norm = out_norm(d_inner)
        self.in_proj = projection(d_model, 2 * d_inner if gated else d_inner)
        self.conv2d = nn.Conv2d(d_inner, d_inner, conv_kernel, padding=conv_kernel // 2,
                                groups=d_inner, bias=conv_bias)
        self.out_proj = projection(d_inner, d_model)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def merge_routes(self, ys: Tensor, index: Tensor, size) -> Tensor:
        """Route outputs (B, K, E, L') -> (B, E, *size): :func:`scan_merge`. A hook for
        subclasses that must reproduce an upstream merge variant."""
        return scan_merge(ys, index, size)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.d_model:
            raise ValueError(f'SS2D expects (B, {self.d_model}, H, W), got {tuple(x.shape)}')
        height, width = x.shape[2:]
        x = self.in_proj(x)
        if self.gated:
            x, z = x.chunk(2, dim=1)
        x = F.silu(self.conv2d(x))
        index = self._route_index(height, width, x.device)
        ys = self.scan_routes(scan_gather(x, index))
        y = self.merge_routes(ys, index, (height, width))
        y = self.out_norm(y).to(x.dtype)
        if self.gated:
            y = y * F.silu(z)
        return self.dropout(self.out_proj(y))
