"""The one selective-scan core shared by the VMamba-style backbones.

:class:`SelectiveScanRoutes` owns the per-route SSM parameters (named exactly as in the
official checkpoints) and scans K routes at once with
:func:`mmssm.ops.selective_scan_lowrank` (the dt projection is the scan's low-rank delta),
each route being one group of B/C. :class:`SS2D` wraps it into the 2-D token mixer

    in_proj -> depthwise conv -> SiLU -> gather routes -> selective scan -> merge
            -> out_norm -> (x silu(z) gate) -> out_proj

where the scan pattern is one of :data:`mmssm.ops.scan_patterns.SCAN_PATTERNS`
('cross' for VMamba, 'atrous' for EfficientVMamba, 'bidirectional' for MobileMamba).
On the CPU in float32 the middle three steps run as one routed kernel
(:meth:`SelectiveScanRoutes.scan_map`, :func:`mmssm.ops.routed_scan.selective_scan_routes`)
that reads the routes straight from the map and sums their outputs straight back -- in
training too, with its adjoint kernel as the backward.
MSVMamba's two-resolution mixer reuses :class:`SelectiveScanRoutes` directly, and Vim's
bidirectional mixer (whose parameters are laid out per direction) the functions
:func:`scan_routes` and :func:`init_dt_projection` / :func:`init_s4d_real`.
"""
import math
from typing import Callable, Optional

import torch
import torch.nn as nn

from mmssm.ops import selective_scan_lowrank
from mmssm.ops.activation import silu, silu_
from mmssm.ops.routed_scan import (route_tokens, routed_training_applies,
                                   selective_scan_routes)
from mmssm.ops.scan_patterns import gather_routes, get_scan_pattern, merge_routes
from mmssm.ops.selective_scan import fused_inference_applies
from .common import LayerNorm2d, Linear2d, updates_in_place

Tensor = torch.Tensor


def inverse_softplus_dt(num: int, dt_min: float = 1e-3, dt_max: float = 0.1,
                        dt_floor: float = 1e-4) -> Tensor:
    """Time-step biases whose softplus is log-uniform in [dt_min, dt_max] (Mamba init)."""
    dt = torch.exp(torch.rand(num) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


@torch.no_grad()
def init_dt_projection(weight: Tensor, bias: Tensor, dt_rank: int,
                       dt_scale: float = 1.0) -> None:
    """Mamba's dt projection init, in place: weights U(+-dt_scale / sqrt(R)), biases
    :func:`inverse_softplus_dt` (any shapes; drawn in that order)."""
    std = dt_scale / math.sqrt(dt_rank)
    weight.uniform_(-std, std)
    bias.copy_(inverse_softplus_dt(bias.numel()).view_as(bias))


@torch.no_grad()
def init_s4d_real(a_log: Tensor) -> None:
    """S4D-real A, in place: ``A_log[..., n] = log(n + 1)`` for the N states (last axis)."""
    states = torch.arange(1, a_log.shape[-1] + 1, dtype=torch.float32)
    a_log.copy_(states.log().expand_as(a_log))


def scan_routes(xs: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
                dt_projs_bias: Tensor, A_logs: Tensor, Ds: Tensor, z: Optional[Tensor] = None,
                weight_dtype: Optional[torch.dtype] = torch.float32) -> Tensor:
    """Scan K routes with per-route SSM parameters as ONE grouped selective scan.

    Args:
        xs: (B, K, E, L) route sequences.
        x_proj_weight: (K, R + 2N, E) projection to [dt (R), B (N), C (N)].
        dt_projs_weight: (K, E, R); dt_projs_bias: (K, E) (added inside the softplus).
        A_logs: (K*E, N), ``A = -exp(A_logs)``; Ds: (K*E,); row ``k*E + e``.
        z: optional (B, K, E, L) gate, ``out = y * silu(z)`` inside the scan.
        weight_dtype: dtype of A, D and the dt bias in the scan: float32 (the VMamba
            family's official code casts them so, also for float64 models), or None for
            float32 -- float64 for float64 inputs (Vim).

    Returns:
        (B, K, E, L) scan outputs in ``xs.dtype``; route k reads B/C group k.
    """
    batch, routes, channels, length = xs.shape
    rank, n = dt_projs_weight.shape[-1], A_logs.shape[-1]
    dtype = xs.dtype
    if weight_dtype is None:
        weight_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    # (K, R + 2N, E) @ (B, K, E, L): one batched matmul; the dt up-projection
    # (K, E, R) @ (B, K, R, L) is the scan's low-rank delta (route k = group k), formed
    # inside the CPU kernel and by a batched matmul elsewhere.
    proj = torch.matmul(x_proj_weight.to(dtype), xs)
    dt, b_proj, c_proj = torch.split(proj, [rank, n, n], dim=2)
    ys = selective_scan_lowrank(
        xs.reshape(batch, routes * channels, length),
        dt,
        dt_projs_weight.reshape(routes * channels, rank),
        -torch.exp(A_logs.to(weight_dtype)),
        b_proj.to(dtype).contiguous(),
        c_proj.to(dtype).contiguous(),
        Ds.to(weight_dtype),
        z=None if z is None else z.reshape(batch, routes * channels, length),
        delta_bias=dt_projs_bias.reshape(-1).to(weight_dtype),
        delta_softplus=True)
    return ys.view(batch, routes, channels, length)


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
        self.ssm_init, self.dt_scale = init, dt_scale
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, init: Optional[str] = None,
                             dt_scale: Optional[float] = None) -> None:
        """(Re-)draw the from-scratch SSM initialisation (default: the one this module
        was built with); backbones call it again after any ``init_cfg``."""
        init = self.ssm_init if init is None else init
        dt_scale = self.dt_scale if dt_scale is None else dt_scale
        bound = 1.0 / math.sqrt(self.d_inner)  # nn.Linear default for x_proj
        self.x_proj_weight.uniform_(-bound, bound)
        self.Ds.fill_(1.0)
        if init == 'v0':
            init_dt_projection(self.dt_projs_weight, self.dt_projs_bias, self.dt_rank, dt_scale)
            init_s4d_real(self.A_logs)
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
        _, routes, channels, _ = xs.shape
        if channels != self.d_inner or first_route + routes > self.num_routes:
            raise ValueError(
                f'scan_routes: xs is {tuple(xs.shape)}, expected (B, K<={self.num_routes}, '
                f'{self.d_inner}, L) starting at route {first_route}')
        sl = slice(first_route, first_route + routes)
        rows = slice(first_route * channels, (first_route + routes) * channels)
        return scan_routes(xs, self.x_proj_weight[sl], self.dt_projs_weight[sl],
                           self.dt_projs_bias[sl], self.A_logs[rows], self.Ds[rows])

    def routed_kernel_applies(self, x: Tensor) -> bool:
        """Whether :meth:`scan_map` runs for ``x`` as the fused routed kernels (CPU float32,
        in inference and in training; see
        :func:`~mmssm.ops.routed_scan.selective_scan_routes`)."""
        tensors = (x, self.x_proj_weight, self.dt_projs_weight)
        return (fused_inference_applies(tensors, None, 'fwd_routes')
                or routed_training_applies(tensors))

    def scan_map(self, x: Tensor, index: Tensor, first_route: int = 0,
                 merge: bool = True) -> Tensor:
        """Gather the K routes of ``index`` from the map ``x``, scan them with parameter
        slots ``first_route .. first_route + K - 1`` and merge their outputs back:
        ``merge(scan_routes(gather(x)))``
        (:func:`~mmssm.ops.routed_scan.selective_scan_routes`), with ``x_proj`` applied
        to the map's tokens once per route instead of to the gathered copies -- or, for
        routes shorter than the map (each reads part of it, e.g. 'atrous'), to each
        route's own steps (one gather of the tokens they read, not K projections of
        every token).

        Args:
            x: (B, E, H, W) map, any strides (channels-last needs no copy).
            index: (K, L) index map of the H * W tokens.
            first_route: parameter slot of route 0.
            merge: return the merged map; else the route outputs per step.

        Returns:
            (B, E, H, W) in channels-last memory; with ``merge=False`` (B, K, L, E).
        """
        batch, channels, height, width = x.shape
        routes, rank, n = index.shape[0], self.dt_rank, self.d_state
        if channels != self.d_inner or first_route + routes > self.num_routes:
            raise ValueError(f'scan_map: x is {tuple(x.shape)} and index {tuple(index.shape)}, '
                             f'expected (B, {self.d_inner}, H, W) and (K, L) with K <= '
                             f'{self.num_routes} routes from slot {first_route}')
        sl = slice(first_route, first_route + routes)
        rows = slice(first_route * channels, (first_route + routes) * channels)
        tokens = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        weight = self.x_proj_weight[sl]
        by_step = index.shape[1] < height * width
        if by_step:
            # (K, R + 2N, E) @ (B, K, E, L): each route's projection of its own steps
            # (the tokens it reads, zero at padding steps), in step order.
            steps = route_tokens(tokens, index)
            proj = torch.matmul(weight, steps.transpose(2, 3))
        else:
            # (K (R + 2N), E) @ (B, E, T): every route's projection of every token, in
            # token order -- what the routed kernel reads at each step's token.
            proj = torch.matmul(weight.reshape(-1, channels), tokens.transpose(1, 2))
        dt, b_proj, c_proj = torch.split(proj.view(batch, routes, rank + 2 * n, -1),
                                         [rank, n, n], dim=2)
        y = selective_scan_routes(
            tokens, index, dt, self.dt_projs_weight[sl].reshape(routes * channels, rank),
            -torch.exp(self.A_logs[rows].float()), b_proj, c_proj, self.Ds[rows].float(),
            delta_bias=self.dt_projs_bias[sl].reshape(-1).float(), delta_softplus=True,
            merge=merge, rows_by_step=by_step)
        if not merge:
            return y
        return y.view(batch, height, width, channels).permute(0, 3, 1, 2)


class SS2D(SelectiveScanRoutes):
    """2-D selective-scan token mixer over an index-map scan pattern.

    Input and output are NCHW: (B, d_model, H, W).

    Args:
        d_model (int): C, input/output channels.
        d_inner (int): E, scanned channels (ssm_ratio * C).
        d_state (int): N.
        dt_rank (int): R.
        scan (str): a pattern of :data:`mmssm.ops.scan_patterns.SCAN_PATTERNS`, e.g.
            'cross' (VMamba, K=4), 'atrous' (EfficientVMamba, K=4) or 'bidirectional'
            (MobileMamba, K=2); K is the pattern's number of routes.
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
        try:
            pattern = get_scan_pattern(scan)
        except ValueError as err:
            raise ValueError(f'SS2D: {err}') from None
        super().__init__(d_inner, d_state, dt_rank, pattern.num_routes, init=init)
        self.d_model = d_model
        self.scan = scan
        self.pattern = pattern
        self.gated = gated
        projection = projection or (lambda cin, cout: Linear2d(cin, cout, bias=False))
        out_norm = out_norm or (lambda channels: LayerNorm2d(channels, eps=1e-5))
        self.out_norm = out_norm(d_inner)
        self.in_proj = projection(d_model, 2 * d_inner if gated else d_inner)
        self.conv2d = nn.Conv2d(d_inner, d_inner, conv_kernel, padding=conv_kernel // 2,
                                groups=d_inner, bias=conv_bias)
        self.out_proj = projection(d_inner, d_model)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _merges_by_pattern(self) -> bool:
        """:meth:`merge_routes` is the pattern's own merge (not overridden on the class or
        the instance), which the routed kernel computes."""
        return ('merge_routes' not in self.__dict__
                and type(self).merge_routes is SS2D.merge_routes)

    def _splits_in_proj(self) -> bool:
        """``in_proj`` is a plain :class:`Linear2d` (its forward not overridden, no hooks
        on it), so its x and z halves can be computed as two products
        (:meth:`Linear2d.forward_parts`) instead of one call."""
        proj = self.in_proj
        return (isinstance(proj, Linear2d) and type(proj).forward is Linear2d.forward
                and not proj._forward_hooks and not proj._forward_pre_hooks)

    def merge_routes(self, ys: Tensor, index: Tensor, size) -> Tensor:
        """Route outputs (B, K, E, L') -> (B, E, *size): the adjoint of the gather
        (:func:`~mmssm.ops.scan_patterns.merge_routes` of the pattern, whose map is
        ``index``; the parity tests override this to reproduce an upstream merge
        variant)."""
        return merge_routes(ys, self.pattern, size)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.d_model:
            raise ValueError(f'SS2D expects (B, {self.d_model}, H, W), got {tuple(x.shape)}')
        height, width = x.shape[2:]
        gate = None
        if self.gated and self._splits_in_proj():
            # x and the gate silu(z) as two products (contiguous, SiLU fused)
            x, gate = self.in_proj.forward_parts(x, (self.d_inner, ) * 2, (None, 'silu'))
        elif self.gated:
            x, z = self.in_proj(x).chunk(2, dim=1)
        else:
            x = self.in_proj(x)
        # inference overwrites the fresh intermediate maps in place (updates_in_place)
        inplace = updates_in_place(x, self)
        x = (silu_ if inplace else silu)(self.conv2d(x))
        index = self.pattern.index(height, width, x.device)
        if self._merges_by_pattern() and self.routed_kernel_applies(x):
            y = self.scan_map(x, index)  # gather + scan + merge in one kernel
        else:
            ys = self.scan_routes(gather_routes(x, self.pattern))
            y = self.merge_routes(ys, index, (height, width))
        y = self.out_norm(y).to(x.dtype)
        if self.gated:
            # (z may be a view of the input where ``projection`` builds an identity)
            gate = silu(z) if gate is None else gate
            y = y.mul_(gate) if inplace else y * gate
        return self.dropout(self.out_proj(y))
