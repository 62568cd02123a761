"""Vision Mamba (Vim, arXiv 2401.09417; official repository hustvl/Vim).

A plain, isotropic ViT-like backbone: a (possibly overlapping) patch embedding, one
class token inserted in the MIDDLE of the row-major token sequence, an absolute
position embedding, ``depth`` residual blocks of one bidirectional Mamba mixer each
("add -> RMSNorm -> mixer" form with an fp32 residual stream) and a final RMSNorm.

The mixer ("bimamba v2") runs the Mamba recipe (in_proj -> causal depthwise conv1d ->
SiLU -> x_proj -> dt_proj -> selective scan gated by SiLU(z)) on the sequence and, with
a second set of parameters (``*_b``), on the reversed sequence; the two results are
averaged before the shared ``out_proj``. Here both directions run as ONE grouped
selective scan: the two routes of :func:`~mmssm.ops.scan_patterns.bidirectional_index`
are stacked on the channel axis and each route is one group of B/C.

Dense prediction follows the official segmentation wrapper (``VisionMambaSeg``, built
the intended way, see ``docs/vim.md``): features of chosen blocks are either the mixer
outputs or the residual stream, reshaped to (B, C, H/stride, W/stride), optionally
through the wrapper's four adapters (``fpn1..fpn4``: deconv-BN-GELU-deconv, deconv,
identity, max-pool) that turn the single-stride map into strides 4/8/16/32.

**Position embedding for other input sizes (differs from the official code).**
``pos_embed`` holds one entry per patch of the ``img_size`` grid plus, with a class
token, the class token's entry at the middle index ``M // 2``. For another grid we take
the class entry out, resize the (gh, gw) patch grid bicubically (align_corners=False,
fp32, any aspect ratio) and put the class entry back at the new middle. The official
code never resizes online (the input must equal ``img_size``); its checkpoint loader
(``vim/utils.py interpolate_pos_embed``, used by the segmentation/detection wrappers
and the stride-8 fine-tuning) assumes the class token is at index 0 and a square grid,
so for the released middle-class-token checkpoints it shifts patches 0..96 by one
position, gives grid cell 97 the class token's position and drops patch 0's. mmssm
keeps every position with its patch (see :func:`resize_pos_embed`); loading a
classification checkpoint into a model without class token drops exactly the class
entry. Results therefore differ from a model loaded by the official wrapper.

Module and parameter names equal the official ones, so official checkpoints load after
dropping the classifier (:mod:`mmssm.converters.vim`).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmssm.ops.bidirectional import bidirectional_conv_silu, bidirectional_merge_gate
from mmssm.ops.norm import rms_norm
from mmssm.ops.selective_scan import builds_graph
from mmssm.registry import MODELS
from ..layers import (DropPath, drop_path_rates, init_dt_projection, init_s4d_real,
                      pyramid_resample, scan_routes)
from .base import SSMBackbone, check_out_indices, checkpointed, resolve_arch

Tensor = torch.Tensor
Grid = Tuple[int, int]


def _upcast(x: Tensor) -> Tensor:
    """fp32 for reduced-precision tensors (the official kernels' accumulation dtype);
    fp64 stays fp64."""
    return x if x.dtype == torch.float64 else x.float()


def _pair(value: Union[int, Sequence[int]], name: str) -> Grid:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f'Vim: {name} must be a positive int or a pair, got {value}')
    return value


def token_grid(size: Grid, patch_size: int, stride: int) -> Grid:
    """Token grid of a patch conv without padding: ``(H - patch) // stride + 1`` per axis."""
    return tuple((s - patch_size) // stride + 1 for s in size)


# ---------------------------------------------------------------------------------------
# Position embedding and rotary tables
# ---------------------------------------------------------------------------------------
def resize_pos_embed(pos_embed: Tensor, src_grid: Grid, dst_grid: Grid,
                     with_cls_token: bool, mode: str = 'bicubic') -> Tensor:
    """Resize a Vim position embedding to another token grid.

    Args:
        pos_embed: (1, gh*gw (+1), C); with ``with_cls_token`` the class token's entry
            sits at the middle index ``gh*gw // 2`` (Vim's middle class token).
        src_grid: (gh, gw) of ``pos_embed`` (row-major).
        dst_grid: (h, w) wanted.
        with_cls_token: whether ``pos_embed`` has a class entry; it is kept unchanged
            and placed at the middle index ``h*w // 2`` of the result.
        mode: interpolation mode (bicubic, align_corners=False, computed in fp32).

    Returns:
        (1, h*w (+1), C) in ``pos_embed``'s dtype; ``pos_embed`` itself if the grids
        are equal.
    """
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    extra = 1 if with_cls_token else 0
    if pos_embed.dim() != 3 or pos_embed.shape[1] != src_grid[0] * src_grid[1] + extra:
        raise ValueError(f'resize_pos_embed: pos_embed {tuple(pos_embed.shape)} does not '
                         f'fit a {src_grid[0]}x{src_grid[1]} grid'
                         f'{" plus a class entry" if extra else ""}')
    if src_grid == dst_grid and not torch.onnx.is_in_onnx_export():
        return pos_embed  # an export resizes in the graph: it runs at any grid
    grid, cls_entry = split_cls_entry(pos_embed, with_cls_token)
    channels = grid.shape[-1]
    grid = grid.reshape(grid.shape[0], *src_grid, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(_upcast(grid), size=dst_grid, mode=mode, align_corners=False)
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).flatten(1, 2)
    return insert_cls_entry(grid, cls_entry)


def split_cls_entry(tokens: Tensor, with_cls_token: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """(B, M+1, C) with the class token at M // 2 -> ((B, M, C), (B, 1, C)); without a
    class token ((B, M, C), None)."""
    if not with_cls_token:
        return tokens, None
    index = (tokens.shape[1] - 1) // 2
    return (torch.cat([tokens[:, :index], tokens[:, index + 1:]], dim=1),
            tokens[:, index:index + 1])


def insert_cls_entry(tokens: Tensor, cls_entry: Optional[Tensor]) -> Tensor:
    """(B, M, C) + (B, 1, C) -> (B, M+1, C) with the class entry at index M // 2."""
    if cls_entry is None:
        return tokens
    index = tokens.shape[1] // 2
    return torch.cat([tokens[:, :index], cls_entry.expand(tokens.shape[0], -1, -1),
                      tokens[:, index:]], dim=1)


def rope_tables(embed_dims: int, grid: Grid, pretrain_grid: int = 14,
                theta: float = 10000.0) -> Tuple[Tensor, Tensor]:
    """Vim's 2-D rotary tables (EVA-02 style, as ``VisionRotaryEmbeddingFast``).

    Channels ``[0, C/2)`` rotate by the row position, ``[C/2, C)`` by the column
    position; within each half, pairs (2k, 2k+1) share the frequency
    ``theta^(-2k / (C/2))``. Positions are ``arange(n) / n * pretrain_grid`` along
    each axis, so any grid spans the pretraining range. Computed in fp32.

    Returns:
        (cos, sin), each (h*w, C), rows in row-major token order.
    """
    if embed_dims % 4:
        raise ValueError(f'Vim: rotary embedding needs embed_dims divisible by 4, got '
                         f'{embed_dims}')
    half = embed_dims // 2
    freqs = 1.0 / (theta**(torch.arange(0, half, 2, device='cpu')[:half // 2].float() / half))
    angles = []
    for length in grid:
        positions = torch.arange(length, device='cpu') / length * pretrain_grid
        angle = positions[:, None] * freqs[None, :]
        # each frequency twice, (a, a, b, b, ...): repeat_interleave's ONNX export loses
        # the repeat at traced sizes
        angles.append(torch.stack([angle, angle], dim=-1).flatten(-2))
    rows, cols = grid
    table = torch.cat([angles[0][:, None, :].expand(rows, cols, half),
                       angles[1][None, :, :].expand(rows, cols, half)], dim=-1)
    table = table.reshape(rows * cols, embed_dims)
    return table.cos(), table.sin()


def rotate_pairs(x: Tensor) -> Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last axis."""
    # (strided slices, not unflatten(-1, (-1, 2)): an ONNX export traces that into a
    # Reshape that ONNX Runtime rejects)
    return torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)


class VisionRope(nn.Module):
    """Rotary position tables for the token grid of ``img_size`` (buffers
    ``freqs_cos``/``freqs_sin`` (h*w, C), stored in checkpoints as in the official
    model); other grids get fresh tables from :func:`rope_tables`.

    Args:
        embed_dims (int): C (divisible by 4).
        grid (tuple): (h, w) token grid at ``img_size``.
        pretrain_grid (int): the official ``pt_hw_seq_len`` (14).
    """

    def __init__(self, embed_dims: int, grid: Grid, pretrain_grid: int = 14):
        super().__init__()
        self.embed_dims = embed_dims
        self.grid = tuple(grid)
        self.pretrain_grid = pretrain_grid
        # Computed on the CPU (like the official tables), then put on the default device.
        device = torch.empty(0).device
        cos, sin = rope_tables(embed_dims, self.grid, pretrain_grid)
        self.register_buffer('freqs_cos', cos.to(device))
        self.register_buffer('freqs_sin', sin.to(device))

    def tables(self, grid: Grid, cls_index: Optional[int]) -> Tuple[Tensor, Tensor]:
        """(cos, sin) for a sequence over ``grid``; a class token at ``cls_index`` is not
        rotated (cos 1, sin 0)."""
        if tuple(grid) == self.grid and not torch.onnx.is_in_onnx_export():
            cos, sin = self.freqs_cos, self.freqs_sin  # (an export builds them in-graph)
        else:
            cos, sin = rope_tables(self.embed_dims, grid, self.pretrain_grid)
            cos = cos.to(self.freqs_cos.device)
            sin = sin.to(self.freqs_sin.device)
        if cls_index is not None:
            cos = torch.cat([cos[:cls_index], cos.new_ones(1, cos.shape[1]), cos[cls_index:]])
            sin = torch.cat([sin[:cls_index], sin.new_zeros(1, sin.shape[1]), sin[cls_index:]])
        return cos, sin

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        # not named `apply`: that would shadow nn.Module.apply (model.to() walks it)
        return x * cos + rotate_pairs(x) * sin

    def extra_repr(self) -> str:
        return f'embed_dims={self.embed_dims}, grid={self.grid}, ' \
               f'pretrain_grid={self.pretrain_grid}'


# ---------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last axis, computed in fp32 and
    returned in ``out_dtype`` (default: the input dtype). Key: ``weight`` only."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor, out_dtype: Optional[torch.dtype] = None) -> Tensor:
        # (mmssm.ops.rms_norm: one fused pass on CPU float32 inference)
        return rms_norm(x, self.weight, self.eps).to(out_dtype or x.dtype)

    def extra_repr(self) -> str:
        return f'{self.weight.shape[0]}, eps={self.eps}'


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (the non-RMS option of the official blocks)."""

    def forward(self, x: Tensor, out_dtype: Optional[torch.dtype] = None) -> Tensor:
        x32 = _upcast(x)
        y = F.layer_norm(x32, self.normalized_shape, self.weight.to(x32.dtype),
                         self.bias.to(x32.dtype), self.eps)
        return y.to(out_dtype or x.dtype)


def build_norm(norm_type: str, channels: int, eps: float) -> nn.Module:
    if norm_type == 'rms':
        return RMSNorm(channels, eps)
    if norm_type == 'ln':
        return FP32LayerNorm(channels, eps=eps)
    raise ValueError(f"Vim: norm_type must be 'rms' or 'ln', got {norm_type!r}")


class VimPatchEmbed(nn.Module):
    """Patch embedding: Conv2d(in, C, kernel=patch_size, stride=stride), no padding
    (stride < patch_size gives overlapping patches). Key ``proj``.

    Input (B, in_channels, H, W) -> tokens (B, h*w, C) in row-major order and (h, w)
    with h = (H - patch_size) // stride + 1 (likewise w).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, stride: int):
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.stride = stride
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride)

    def forward(self, x: Tensor) -> Tuple[Tensor, Grid]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'Vim expects input of shape (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        if min(x.shape[2:]) < self.patch_size:
            raise ValueError(f'Vim: input {tuple(x.shape[2:])} is smaller than one '
                             f'{self.patch_size}x{self.patch_size} patch')
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class BiMambaMixer(nn.Module):
    """Vim's bidirectional Mamba mixer ("bimamba v2"), (B, L, C) -> (B, L, C).

    Forward branch: ``u = silu(causal_conv1d(x))``; ``[dt, B, C] = x_proj(u)``;
    ``y = scan(u, softplus(dt_proj(dt)), A=-exp(A_log), B, C, D) * silu(z)``. The
    backward branch does the same on x and z reversed along L with the ``*_b``
    parameters and is reversed back. ``out = out_proj((y_f + y_b) / 2)`` (without
    ``/ 2`` if not ``divide_out``). mmssm applies the gate once, to the sum of the two
    ungated scans: the same function (equal up to rounding), without reversing z.

    Parameters (official names): ``A_log, D, A_b_log, D_b`` (Di, N) / (Di,);
    ``in_proj`` (2Di, C) (rows [0, Di) -> x, [Di, 2Di) -> z); ``conv1d(_b)`` (Di, 1, K);
    ``x_proj(_b)`` (R + 2N, Di); ``dt_proj(_b)`` (Di, R) + bias; ``out_proj`` (C, Di).

    Args:
        embed_dims (int): C.
        d_state (int): N.
        expand (int): Di = expand * C.
        d_conv (int): K, causal conv kernel size.
        dt_rank (int | 'auto'): R; 'auto' = ceil(C / 16).
        conv_bias (bool): bias of the causal convs.
        proj_bias (bool): biases of in_proj / out_proj.
        divide_out (bool): average (True) or sum the two directions.
    """

    def __init__(self, embed_dims: int, d_state: int = 16, expand: int = 2, d_conv: int = 4,
                 dt_rank: Union[int, str] = 'auto', conv_bias: bool = True,
                 proj_bias: bool = False, divide_out: bool = True):
        super().__init__()
        d_inner = int(expand * embed_dims)
        if dt_rank == 'auto':
            dt_rank = math.ceil(embed_dims / 16)
        if not isinstance(dt_rank, int) or dt_rank < 1:
            raise ValueError(f"BiMambaMixer: dt_rank must be 'auto' or a positive int, "
                             f'got {dt_rank!r}')
        self.embed_dims, self.d_inner, self.d_state = embed_dims, d_inner, d_state
        self.dt_rank, self.d_conv, self.divide_out = dt_rank, d_conv, divide_out
        # Parameter order matches the official state dict.
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.A_b_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D_b = nn.Parameter(torch.empty(d_inner))
        self.in_proj = nn.Linear(embed_dims, 2 * d_inner, bias=proj_bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.conv1d_b = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=conv_bias)
        self.x_proj_b = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj_b = nn.Linear(dt_rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, embed_dims, bias=proj_bias)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba initialisation for BOTH directions, with the shared SS2D helpers:
        S4D-real A, D = 1, dt weights U(+-R^-1/2) and biases whose softplus is
        log-uniform in [1e-3, 0.1]. (The official code leaves the backward
        ``dt_proj_b`` at a zero bias.)"""
        for a_log, d, dt_proj in ((self.A_log, self.D, self.dt_proj),
                                  (self.A_b_log, self.D_b, self.dt_proj_b)):
            init_s4d_real(a_log)
            d.fill_(1.0)
            init_dt_projection(dt_proj.weight, dt_proj.bias, self.dt_rank)
            a_log._no_weight_decay = True
            d._no_weight_decay = True

    # (owner submodule or None for the mixer itself, parameter name): both directions'
    # parameters in the order route_parameters stacks them
    DIRECTION_PARAMETERS = (('conv1d', 'weight'), ('conv1d_b', 'weight'), ('conv1d', 'bias'),
                            ('conv1d_b', 'bias'), ('x_proj', 'weight'), ('x_proj_b', 'weight'),
                            ('dt_proj', 'weight'), ('dt_proj_b', 'weight'), ('dt_proj', 'bias'),
                            ('dt_proj_b', 'bias'), (None, 'A_log'), (None, 'A_b_log'),
                            (None, 'D'), (None, 'D_b'))

    def _direction_parameters(self) -> Tuple[Tuple[Optional[Tensor], ...], bool]:
        """(the tensors of :attr:`DIRECTION_PARAMETERS`, whether they are all stored
        parameters). Read from the modules' parameter dicts (``nn.Module.__getattr__``
        costs 1-2 us per nested lookup: 14 per block and forward, about 0.5 ms of
        Vim-Ti's), or by attribute where a submodule computes one (a parametrization):
        then False, as a computed tensor is new on every read and may land at the address
        of the last one with the same version, so no cache key can tell them apart."""
        modules, own = self._modules, self._parameters
        try:
            return tuple(own[name] if owner is None else modules[owner]._parameters[name]
                         for owner, name in self.DIRECTION_PARAMETERS), True
        except KeyError:
            return tuple(getattr(self if owner is None else getattr(self, owner), name)
                         for owner, name in self.DIRECTION_PARAMETERS), False

    def route_parameters(self) -> Tuple[Tensor, ...]:
        """Both directions' parameters stacked as the one grouped conv / scan wants them:
        (conv weight, conv bias or None, x_proj, dt_proj weight, dt_proj bias, A_log, D).

        Built anew whenever autograd needs them or a submodule computes one of them (see
        :meth:`_direction_parameters`); otherwise built once and reused until a parameter
        changes (its storage or version: an optimizer step, load_state_dict; ``.to()``
        drops them, see :meth:`_apply`), so inference does not rebuild them in every
        block of every forward.
        """
        params, stored = self._direction_parameters()
        key = None if not stored or builds_graph(params) else tuple(
            None if p is None else (p.data_ptr(), p._version, p.dtype, p.device)
            for p in params)
        cached = self.__dict__.get('_route_parameters')
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        (conv_w, conv_w_b, conv_bias, conv_bias_b, x_proj, x_proj_b, dt_w, dt_w_b, dt_bias,
         dt_bias_b, a_log, a_log_b, d, d_b) = params
        stacked = (torch.cat([conv_w, conv_w_b]),
                   None if conv_bias is None else torch.cat([conv_bias, conv_bias_b]),
                   torch.stack([x_proj, x_proj_b]), torch.stack([dt_w, dt_w_b]),
                   torch.stack([dt_bias, dt_bias_b]), torch.cat([a_log, a_log_b]),
                   torch.cat([d, d_b]))
        self.__dict__['_route_parameters'] = None if key is None else (key, stacked)
        return stacked

    def _apply(self, fn, *args, **kwargs):
        # .to() / .half() / .float() / .cuda() swap every parameter's data; a round trip
        # such as half() then float() can put a fresh tensor (version 0) at a freed
        # address, which the cache key above would take for the original. Drop the cache
        # instead of relying on the key there. (Assigning ``p.data`` by hand bypasses this
        # hook: call ``_apply(lambda t: t)`` afterwards, or run one grad-enabled forward.)
        self.__dict__.pop('_route_parameters', None)
        return super()._apply(fn, *args, **kwargs)

    def forward(self, hidden: Tensor) -> Tensor:
        batch, length, channels = hidden.shape
        if channels != self.embed_dims:
            raise ValueError(f'BiMambaMixer expects (B, L, {self.embed_dims}), got '
                             f'{tuple(hidden.shape)}')
        di = self.d_inner
        # in_proj as W @ hidden^T: channel-major (B, 2Di, L), the layout the routes are
        # read from (transposing F.linear's (B, L, 2Di) output took two 170 us strided
        # copies per block of Vim-Ti at 224 on one core; the transposed GEMM operand
        # costs about 60 us).
        xz = torch.bmm(self.in_proj.weight.expand(batch, -1, -1), hidden.transpose(1, 2))
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        x, z = xz.split(di, dim=1)  # (B, Di, L) each
        conv_w, conv_b, x_proj, dt_w, dt_b, a_log, d = self.route_parameters()
        # Route 0 forward, route 1 reversed, each through its own causal depthwise conv
        # and SiLU: (B, 2, Di, L) (one fused pass on CPU inference, see mmssm.ops.bidirectional).
        u = bidirectional_conv_silu(x, conv_w, conv_b)

        # One scan for both directions (route k = direction k), through the shared core;
        # the weights stay float64 for a float64 model.
        ys = scan_routes(u, x_proj, dt_w, dt_b, a_log, d, weight_dtype=None)
        # The gate silu(z) multiplies each direction's output at the same token, so it is
        # applied once to their sum: y_f * g + flip(y_b * flip(g)) = (y_f + flip(y_b)) * g
        # (the official kernel gates inside each scan; equal up to rounding), which spares
        # gathering z per route. The 1/2 of divide_out is exact in either place.
        y = bidirectional_merge_gate(ys, z, 0.5 if self.divide_out else 1.0)  # (B, Di, L)
        return self.out_proj(y.transpose(1, 2))


class VimBlock(nn.Module):
    """``residual' = residual + DropPath(hidden)``; ``hidden' = mixer(norm(residual'))``.

    The sum is formed and normalised in fp32 (the official fused add+norm kernel); the
    new residual is fp32 when ``residual_in_fp32`` (else the incoming residual's dtype);
    the normalised tokens go to the mixer in the incoming hidden's dtype. Block 0 gets
    ``residual=None`` and uses the embedded tokens as its residual.

    Keys: ``mixer.*``, ``norm.weight``.
    """

    def __init__(self, embed_dims: int, mixer: BiMambaMixer, norm: nn.Module,
                 drop_path: float = 0.0, residual_in_fp32: bool = True):
        super().__init__()
        self.mixer = mixer
        self.norm = norm
        self.drop_path = DropPath(drop_path)
        self.residual_in_fp32 = residual_in_fp32

    def add_residual(self, hidden: Tensor, residual: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """(fp32 sum, new residual)."""
        if residual is None:
            total = _upcast(hidden)
            return total, (total if self.residual_in_fp32 else hidden)
        total = _upcast(residual) + _upcast(self.drop_path(hidden))
        return total, (total if self.residual_in_fp32 else total.to(residual.dtype))

    def forward(self, hidden: Tensor, residual: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        total, residual = self.add_residual(hidden, residual)
        return self.mixer(self.norm(total, out_dtype=hidden.dtype)), residual


# Adapter scale factors by layout: the official patch_size-16 and patch_size-8 sets.
FPN_LAYOUTS = ((4.0, 2.0, 1.0, 0.5), (2.0, 1.0, 0.5, 0.25))


# ---------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------
@MODELS.register_module()
class Vim(SSMBackbone):
    """Vision Mamba backbone.

    Args:
        arch (str | dict): preset ('tiny', 'small', 'base', 'tiny_stride8',
            'small_stride8') or a dict with ``embed_dims``, ``depth`` and optionally
            ``patch_size`` (16), ``stride`` (= patch_size), ``d_state`` (16),
            ``expand`` (2), ``d_conv`` (4), ``dt_rank`` ('auto'), ``conv_bias`` (True),
            ``proj_bias`` (False).
        img_size (int | tuple): size the position embedding (and rope tables) are
            defined for; other input sizes interpolate it (see module docstring).
        in_channels (int): input channels.
        out_indices (int | Sequence[int]): blocks whose features are returned,
            strictly increasing (negative counts from the end).
        with_cls_token (bool): a learnable class token inserted at the middle of the
            sequence (index M // 2), as in the released classification models. It is
            removed from the feature maps. Official segmentation checkpoints have none.
        feature_type (str): 'residual': the residual stream after the block
            (official ``use_residual_as_feature=True``); 'mixer': the block's mixer output.
        last_feature (str): with 'residual' features, what the LAST block
            (``depth - 1``) returns: 'normed' (final RMSNorm of the stream), 'residual'
            (the stream, no norm; official 'add') or 'mixer' (official 'none').
        out_type (str): 'featmap' -> tuple of (B, C, h, w) maps (through the adapters
            with ``with_fpn``); 'cls_token' -> ``((B, C), )`` the final-normed class
            token (the classifier's input; needs ``with_cls_token`` and
            ``out_indices=-1``).
        with_fpn (bool): apply the official segmentation wrapper's adapters
            ``fpn1..fpn4`` to the (1 to 4) features; one feature is replicated to four.
        fpn_scales (tuple, optional): adapter scale factors, (4, 2, 1, 0.5) (the
            official patch-16 layout: deconv-BN-GELU-deconv, deconv, identity,
            max-pool 2) or (2, 1, 0.5, 0.25) (patch-8 layout); default: the one that
            gives strides 4/8/16/32 for this ``stride``.
        fpn_norm (str): 'BN' or 'SyncBN' in ``fpn1``.
        use_rope (bool): 2-D rotary embedding applied to the hidden tokens at the start
            of every block (official ``if_rope``; the class token is not rotated).
        rope_residual (bool): also rotate the residual stream (``if_rope_residual``).
        rope_pretrain_grid (int): official ``pt_hw_seq_len``.
        norm_type (str): 'rms' (released models) or 'ln'.
        norm_eps (float): norm epsilon.
        residual_in_fp32 (bool): keep the residual stream in fp32 (matters only under
            reduced precision).
        divide_out (bool): average the two scan directions (released models).
        drop_rate (float): dropout after adding the position embedding.
        drop_path_rate (float): stochastic depth. As in the official code block ``i``
            drops its incoming mixer output with rate ``[0, *linspace(0, rate, depth)][i]``
            and the final add before the class-token norm uses ``rate`` itself.
        frozen_stages (int): -1: none; k >= 0: patch embedding, position embedding and
            class token plus blocks ``0..k-1`` (and the final norm when k == depth).
        norm_eval (bool): keep BatchNorm of the adapters in eval mode while training.
        with_cp (bool): gradient checkpointing per block.
        pretrained (str, optional): deprecated, as in mmseg: a checkpoint path that
            becomes ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)`` (mmseg
            segmentors pass their ``pretrained`` here).
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint=PATH)``
            with an official or mmssm checkpoint; position embedding, class token and
            rope tables are adapted to this model (:meth:`adapt_state_dict`, also run by
            every ``load_state_dict``).
    """
    family = 'vim'
    arch_settings = {
        'tiny': dict(embed_dims=192, depth=24, patch_size=16, stride=16),
        'small': dict(embed_dims=384, depth=24, patch_size=16, stride=16),
        'base': dict(embed_dims=768, depth=24, patch_size=16, stride=16),
        'tiny_stride8': dict(embed_dims=192, depth=24, patch_size=16, stride=8),
        'small_stride8': dict(embed_dims=384, depth=24, patch_size=16, stride=8),
    }
    arch_defaults = dict(patch_size=16, stride=None, d_state=16, expand=2, d_conv=4,
                         dt_rank='auto', conv_bias=True, proj_bias=False)

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 with_cls_token: bool = True,
                 feature_type: str = 'residual',
                 last_feature: str = 'normed',
                 out_type: str = 'featmap',
                 with_fpn: bool = False,
                 fpn_scales: Optional[Sequence[float]] = None,
                 fpn_norm: str = 'BN',
                 use_rope: bool = False,
                 rope_residual: bool = False,
                 rope_pretrain_grid: int = 14,
                 norm_type: str = 'rms',
                 norm_eps: float = 1e-5,
                 residual_in_fp32: bool = True,
                 divide_out: bool = True,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval,
                         pretrained=pretrained, init_cfg=init_cfg)
        settings = resolve_arch(arch, self.arch_settings, ('embed_dims', 'depth'), 'Vim',
                                optional=self.arch_defaults)
        settings = {**self.arch_defaults, **settings}
        if settings['stride'] is None:
            settings['stride'] = settings['patch_size']
        self.arch = settings
        self.embed_dims = embed_dims = int(settings['embed_dims'])
        self.depth = depth = int(settings['depth'])
        self.patch_size = int(settings['patch_size'])
        self.stride = int(settings['stride'])
        if depth < 1 or embed_dims < 1 or self.patch_size < 1 or self.stride < 1:
            raise ValueError(f'Vim: arch values must be positive, got {settings}')
        self.img_size = _pair(img_size, 'img_size')
        if min(self.img_size) < self.patch_size:
            raise ValueError(f'Vim: img_size {self.img_size} is smaller than patch_size '
                             f'{self.patch_size}')
        self.grid = token_grid(self.img_size, self.patch_size, self.stride)
        self.num_patches = self.grid[0] * self.grid[1]

        self.out_indices = check_out_indices(out_indices, depth, 'Vim')
        if not self.out_indices or any(
                b <= a for a, b in zip(self.out_indices, self.out_indices[1:])):
            raise ValueError(f'Vim: out_indices must be non-empty and strictly increasing, '
                             f'got {out_indices}')
        for name, value, choices in (('feature_type', feature_type, ('residual', 'mixer')),
                                     ('last_feature', last_feature,
                                      ('normed', 'residual', 'mixer')),
                                     ('out_type', out_type, ('featmap', 'cls_token')),
                                     ('fpn_norm', fpn_norm, ('BN', 'SyncBN'))):
            if value not in choices:
                raise ValueError(f'Vim: {name} must be one of {choices}, got {value!r}')
        self.feature_type, self.last_feature, self.out_type = feature_type, last_feature, out_type
        if out_type == 'cls_token':
            if not with_cls_token or with_fpn or self.out_indices != (depth - 1, ):
                raise ValueError("Vim: out_type='cls_token' needs with_cls_token=True, "
                                 'with_fpn=False and out_indices=-1')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'Vim: drop_path_rate must be in [0, 1), got {drop_path_rate}')
        self.with_cp = with_cp
        self.use_rope, self.rope_residual = use_rope, rope_residual

        # Parameters/modules in the official state-dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims)) if with_cls_token else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_patches + int(with_cls_token), embed_dims))
        self.patch_embed = VimPatchEmbed(in_channels, embed_dims, self.patch_size, self.stride)
        self.rope = VisionRope(embed_dims, self.grid, rope_pretrain_grid) if use_rope else None
        self.pos_drop = nn.Dropout(drop_rate)

        # Official quirk: block i uses [0, *linspace(0, rate, depth)][i].
        rates = [0.0] + drop_path_rates(drop_path_rate, [depth])
        self.layers = nn.ModuleList(
            VimBlock(embed_dims,
                     BiMambaMixer(embed_dims, d_state=int(settings['d_state']),
                                  expand=settings['expand'], d_conv=int(settings['d_conv']),
                                  dt_rank=settings['dt_rank'],
                                  conv_bias=bool(settings['conv_bias']),
                                  proj_bias=bool(settings['proj_bias']),
                                  divide_out=divide_out),
                     build_norm(norm_type, embed_dims, norm_eps),
                     drop_path=rates[i], residual_in_fp32=residual_in_fp32)
            for i in range(depth))
        self.norm_f = build_norm(norm_type, embed_dims, norm_eps)
        self.drop_path = DropPath(drop_path_rate)  # before norm_f for the class token

        self.with_fpn = with_fpn
        self.fpn_scales = None
        if with_fpn:
            if len(self.out_indices) > 4:
                raise ValueError(f'Vim: with_fpn takes 1 to 4 out_indices, got '
                                 f'{self.out_indices}')
            if fpn_scales is None:
                fpn_scales = (4.0, 2.0, 1.0, 0.5) if self.stride >= 16 else (2.0, 1.0, 0.5, 0.25)
            fpn_scales = tuple(float(s) for s in fpn_scales)
            if fpn_scales not in FPN_LAYOUTS:
                raise ValueError(f'Vim: fpn_scales must be one of {list(FPN_LAYOUTS)}, '
                                 f'got {fpn_scales}')
            self.fpn_scales = fpn_scales
            # The official adapters: the simple-feature-pyramid resampling (shared with
            # SimpleFPN) without channel reduction, BN or SyncBN in the 4x one.
            norm = nn.SyncBatchNorm if fpn_norm == 'SyncBN' else nn.BatchNorm2d
            for i, scale in enumerate(fpn_scales):
                adapter, _ = pyramid_resample(scale, embed_dims, norm, halve_channels=False)
                self.add_module(f'fpn{i + 1}', adapter)

        if out_type == 'cls_token':
            self._set_outputs([embed_dims], [None])  # (B, C): not a map
        elif with_fpn:  # one adapter per feature; a single feature feeds all four
            count = len(self.out_indices)
            scales = self.fpn_scales if count == 1 else self.fpn_scales[:count]
            self._set_outputs([embed_dims] * len(scales),
                              [int(round(self.stride / s)) for s in scales])
        else:
            self._set_outputs([embed_dims] * len(self.out_indices),
                              [self.stride] * len(self.out_indices))

        self._init_embeddings()
        self._register_load_state_dict_pre_hook(self._adapt_checkpoint_hook)
        self._freeze_stages()

    # -- initialisation ----------------------------------------------------------------
    @torch.no_grad()
    def _init_embeddings(self) -> None:
        """From-scratch init as the official model: trunc-normal(0.02) position/class
        embeddings, lecun-normal patch conv, zero Linear biases except dt_proj,
        ``out_proj`` kaiming-uniform / sqrt(depth)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        proj = self.patch_embed.proj
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        # lecun normal: normal truncated at 2 std, variance 1 / fan_in after truncation.
        std = math.sqrt(1.0 / fan_in) / .87962566103423978
        nn.init.trunc_normal_(proj.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(proj.bias)
        for layer in self.layers:
            mixer = layer.mixer
            for linear in (mixer.in_proj, mixer.out_proj):
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
            nn.init.kaiming_uniform_(mixer.out_proj.weight, a=math.sqrt(5))
            mixer.out_proj.weight.div_(math.sqrt(self.depth))
        self.pos_embed._no_weight_decay = True
        if self.cls_token is not None:
            self.cls_token._no_weight_decay = True

    def reset_ssm_parameters(self) -> None:
        """The Mamba initialisation of every mixer (A, D, dt projections of both
        directions) and Vim's own from-scratch init (:meth:`_init_embeddings`: position
        / class embeddings, patch conv, the ``out_proj`` rescaled by sqrt(depth))."""
        super().reset_ssm_parameters()
        self._init_embeddings()

    # -- checkpoint adaptation ---------------------------------------------------------
    def adapt_state_dict(self, state_dict: Dict[str, Tensor],
                         prefix: str = '') -> Dict[str, Tensor]:
        """Fit ``pos_embed``, ``cls_token`` and rope tables of a Vim state dict (our
        naming, keys under ``prefix``) to this model, in place, and return it.

        * ``pos_embed`` of another grid is resized (:func:`resize_pos_embed`); the
          source grid is this model's grid if the sizes agree, else a square one.
        * A checkpoint with a class token loaded into a model without one loses the
          class token and exactly its position entry (the middle one).
        * Rope tables are a function of the configuration: other shapes are replaced by
          ours; tables in a checkpoint for a model without rope are dropped (warning:
          that checkpoint was trained with rope).
        """
        key = prefix + 'pos_embed'
        if key in state_dict:
            source = state_dict[key]
            ckpt_cls = (prefix + 'cls_token') in state_dict
            own_cls = self.cls_token is not None
            if ckpt_cls and not own_cls:
                state_dict.pop(prefix + 'cls_token')
            if own_cls and not ckpt_cls:
                raise ValueError(
                    'Vim: the checkpoint has no cls_token (e.g. a segmentation backbone) '
                    'but this model was built with with_cls_token=True; build it with '
                    'with_cls_token=False')
            if source.dim() != 3 or source.shape[-1] != self.embed_dims:
                raise ValueError(f'Vim: checkpoint pos_embed {tuple(source.shape)} does not '
                                 f'match embed_dims {self.embed_dims}')
            count = source.shape[1] - int(ckpt_cls)
            if count == self.num_patches:
                src_grid = self.grid
            else:
                side = math.isqrt(count)
                if side * side != count:
                    raise ValueError(
                        f'Vim: checkpoint pos_embed {tuple(source.shape)} has {count} patch '
                        f'entries, neither this model\'s {self.grid[0]}x{self.grid[1]} grid '
                        'nor a square grid; cannot resize it')
                src_grid = (side, side)
            grid, cls_entry = split_cls_entry(source, ckpt_cls)
            grid = resize_pos_embed(grid, src_grid, self.grid, with_cls_token=False)
            state_dict[key] = insert_cls_entry(grid, cls_entry if own_cls else None)
        for name in ('freqs_cos', 'freqs_sin'):
            key = f'{prefix}rope.{name}'
            if key not in state_dict:
                continue
            if self.rope is None:
                state_dict.pop(key)
                from mmengine.logging import print_log
                print_log(f'Vim: dropped {key} from the checkpoint: it was trained with '
                          'rotary embeddings (official if_rope); build with use_rope=True '
                          'to use them', logger='current', level=30)
            elif state_dict[key].shape != getattr(self.rope, name).shape:
                state_dict[key] = getattr(self.rope, name).detach().clone()
        return state_dict

    def _adapt_checkpoint_hook(self, state_dict, prefix, local_metadata, strict,
                               missing_keys, unexpected_keys, error_msgs) -> None:
        self.adapt_state_dict(state_dict, prefix)

    # -- freezing --------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        """Each block is a stage for ``frozen_stages``."""
        return self.depth

    def stage_modules(self, index: int) -> List[nn.Module]:
        """Block ``index``; the last one with the final norm it alone feeds."""
        return [self.layers[index]] + ([self.norm_f] if index == self.depth - 1 else [])

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if self.frozen_stages >= 0:
            self.pos_embed.requires_grad = False
            if self.cls_token is not None:
                self.cls_token.requires_grad = False

    # -- forward -----------------------------------------------------------------------
    def position_embedding(self, grid: Grid) -> Tensor:
        """``pos_embed`` for a token grid (class entry at the middle if any)."""
        return resize_pos_embed(self.pos_embed, self.grid, grid,
                                with_cls_token=self.cls_token is not None)

    def _to_map(self, tokens: Tensor, grid: Grid) -> Tensor:
        tokens, _ = split_cls_entry(tokens, self.cls_token is not None)
        batch, _, channels = tokens.shape  # explicit sizes: an empty batch has no -1
        return tokens.transpose(1, 2).reshape(batch, channels, *grid).contiguous()

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, in_channels, H, W) -> tuple of (B, C, h, w) maps (h = (H - patch) //
        stride + 1), one per out index in block order, or through the adapters with
        ``with_fpn``; ``((B, C), )`` for ``out_type='cls_token'``."""
        tokens, grid = self.patch_embed(x)
        with_cls = self.cls_token is not None
        cls_index = tokens.shape[1] // 2 if with_cls else None
        if with_cls:
            tokens = insert_cls_entry(tokens, self.cls_token.to(tokens.dtype))
        hidden = self.pos_drop(tokens + self.position_embedding(grid))
        if self.rope is not None:
            cos, sin = self.rope.tables(grid, cls_index)

        wanted = set(self.out_indices)
        residual_features = self.feature_type == 'residual'
        need_last = self.out_type == 'cls_token' or (
            residual_features and self.depth - 1 in wanted)
        # Blocks after the last needed one do not influence the outputs.
        last_block = self.depth - 1 if need_last else max(wanted) + int(residual_features)
        features = []
        residual = None
        for i, layer in enumerate(self.layers[:last_block + 1]):
            if self.rope is not None:
                hidden = VisionRope.rotate(hidden, cos, sin)
                if residual is not None and self.rope_residual:
                    residual = VisionRope.rotate(residual, cos, sin)
            if residual_features and i == last_block and not need_last:
                # Only the stream after block i - 1 is needed: block i's add.
                residual = layer.add_residual(hidden, residual)[1]
            else:
                hidden, residual = checkpointed(layer, hidden, residual, with_cp=self.with_cp)
            if residual_features:
                if i - 1 in wanted:  # block i formed the stream after block i - 1
                    features.append(self._to_map(residual, grid))
            elif i in wanted:
                features.append(self._to_map(hidden, grid))

        if self.out_type == 'cls_token':
            total = _upcast(residual) + _upcast(self.drop_path(hidden))
            return (self.norm_f(total, out_dtype=hidden.dtype)[:, cls_index], )
        if need_last:
            if self.last_feature == 'mixer':
                last = hidden
            elif self.last_feature == 'residual':
                last = hidden + residual
            else:
                last = self.norm_f(_upcast(hidden) + _upcast(residual),
                                   out_dtype=hidden.dtype)
            features.append(self._to_map(last, grid))

        if self.with_fpn:
            if len(features) == 1:
                features = features * 4
            adapters = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
            features = [adapter(f) for adapter, f in zip(adapters, features)]
        return tuple(features)
