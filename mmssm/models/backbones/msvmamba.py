"""MSVMamba backbones (Multi-Scale VMamba, arXiv 2405.14174; official master branch).

The token mixer (MS2D) scans each feature map at two resolutions with the shared
selective-scan core (:class:`~mmssm.models.layers.SelectiveScanRoutes`):

* parameter slot 1, full resolution: one forward row-major route
  (:func:`~mmssm.ops.scan_patterns.row_major_index`) over the 3x3-conv branch;
* parameter slot 0, half resolution: ONE route over a 7x7 stride-2 conv branch that
  visits the map reversed row-major, then column-major, then reversed column-major
  (:func:`~mmssm.ops.scan_patterns.multiscale_low_index`); the state runs on across
  the three segments.

Both scans are normalised by the same ``out_norm`` before the low-resolution result is
folded back onto its pixels, bilinearly upsampled and added to the full-resolution one;
then squeeze-excitation, the SiLU(z) gate and ``out_proj``. Blocks add a ConvFFN (1x1
-> depthwise 3x3 with an inner residual -> GELU -> 1x1). Tensors between modules are
channels-last (B, H, W, C) as in the official code; the outputs are NCHW.

Module names equal the official ones, so official checkpoints load after dropping the
classifier (see :mod:`mmssm.converters.msvmamba`).
"""
import math
from collections import OrderedDict
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmssm.ops.activation import silu, silu_
from mmssm.ops.linear import linear
from mmssm.ops.routed_scan import merge_token_routes
from mmssm.ops.scan_patterns import gather_routes, get_scan_pattern, merge_routes
from mmssm.registry import MODELS
from ..layers import (GELU, DropPath, Linear, PatchMerging2D, SelectiveScanRoutes, SqueezeExcite,
                      drop_path_rates, updates_in_place)
from .base import (SSMBackbone, check_out_indices, init_linear_and_layernorm, resolve_arch,
                   run_sequential)

Tensor = torch.Tensor

# Every LayerNorm of the official backbone is nn.LayerNorm(eps=1e-5).
LN_EPS = 1e-5


class ToChannelsLast(nn.Module):
    """(B, C, H, W) -> (B, H, W, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


def _init_weights(module: nn.Module) -> None:
    """The official from-scratch init (:func:`init_linear_and_layernorm`), whose
    ``nn.Linear`` layers include the SE's two (1x1 convolutions here)."""
    init_linear_and_layernorm(module)
    if isinstance(module, SqueezeExcite):
        for conv in (module.conv_reduce, module.conv_expand):
            nn.init.trunc_normal_(conv.weight, std=0.02)


class ConvFFN(nn.Module):
    """MSVMamba's convolutional FFN, channels-last in and out: (B, H, W, C) -> (B, H, W, C).

    ``h = linear1(x); h = h + dwc(h); out = linear2(gelu(h))`` with dropout after both
    1x1 convolutions. The 1x1s are Conv2d (4-D weights) as in the checkpoints; they are
    applied as linear maps over the channels of the token-major map
    (:func:`mmssm.ops.linear.linear`), and the depthwise conv reads its channels-last
    view, so no layout copy is made.

    Args:
        channels (int): C, input/output channels.
        expansion (int): hidden width ``expansion * C``.
        drop (float): dropout probability.
    """

    def __init__(self, channels: int, expansion: int = 2, drop: float = 0.0):
        super().__init__()
        hidden = channels * expansion
        self.linear1 = nn.Conv2d(channels, hidden, 1)
        self.drop1 = nn.Dropout(drop)
        self.act = GELU()
        self.linear2 = nn.Conv2d(hidden, channels, 1)
        self.drop2 = nn.Dropout(drop)
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop1(linear(x, self.linear1.weight.flatten(1), self.linear1.bias))
        x = x.permute(0, 3, 1, 2)  # (B, hidden, H, W) in channels-last memory
        if isinstance(self.act, GELU) and updates_in_place(x, self):
            # inference: the sum and the GELU overwrite the conv's output
            x = self.act.forward_(self.dwc(x).add_(x))
        else:
            x = self.act(x + self.dwc(x))
        x = x.permute(0, 2, 3, 1)
        return self.drop2(linear(x, self.linear2.weight.flatten(1), self.linear2.bias))


class MultiScaleSS2D(SelectiveScanRoutes):
    """MS2D: the two-resolution selective-scan mixer, channels-last in and out.

    Input (B, H, W, d_model) -> (B, H, W, d_model). The low-resolution branch is
    ceil(H/2) x ceil(W/2).

    Args:
        d_model (int): C.
        d_inner (int): E, scanned channels (``ssm_ratio * C``).
        d_state (int): N.
        dt_rank (int): R.
        conv_bias (bool): biases of the two depthwise convs.
        use_se (bool): squeeze-excitation (reduction 8) after the merge.
        dropout (float): dropout on the output.
    """
    LOW_RES_SLOT = 0
    FULL_RES_SLOT = 1

    def __init__(self, d_model: int, d_inner: int, d_state: int, dt_rank: int,
                 conv_bias: bool = True, use_se: bool = True, dropout: float = 0.0):
        super().__init__(d_inner, d_state, dt_rank, num_routes=2, init='v0')
        self.d_model = d_model
        self.out_norm = nn.LayerNorm(d_inner, eps=LN_EPS)
        if use_se:
            self.se = SqueezeExcite(d_inner, d_inner // 8, bias=False)
        self.use_se = use_se
        self.in_proj = Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner,
                                bias=conv_bias)
        self.conv2d_b1 = nn.Conv2d(d_inner, d_inner, 7, stride=2, padding=3,
                                   groups=d_inner, bias=conv_bias)
        self.out_proj = Linear(d_inner, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _scan_branch(self, x: Tensor, pattern: str, slot: int) -> Tensor:
        """Scan the NCHW map ``x`` along the scan pattern ``pattern`` with parameter
        ``slot``, normalise every token with ``out_norm`` and sum the result back onto
        the pixels."""
        if self.routed_kernel_applies(x):
            # CPU float32 (inference and training): the routed kernels read the route from
            # the map and return its outputs token-major per step, normalised and summed.
            batch, channels, height, width = x.shape
            index = get_scan_pattern(pattern).index(height, width, x.device)
            ys = self.out_norm(self.scan_map(x, index, slot, merge=False)).to(x.dtype)
            # ('row' visits every token once in order: its merge is the identity)
            y = ys[:, 0] if pattern == 'row' else merge_token_routes(ys, index,
                                                                      height * width)
            return y.view(batch, height, width, channels).permute(0, 3, 1, 2)
        ys = self.scan_routes(gather_routes(x, pattern), first_route=slot)  # (B, 1, E, L)
        ys = self.out_norm(ys.transpose(2, 3)).transpose(2, 3).to(x.dtype)
        return merge_routes(ys, pattern, tuple(x.shape[2:]))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f'MultiScaleSS2D expects (B, H, W, {self.d_model}), '
                             f'got {tuple(x.shape)}')
        height, width = x.shape[1:3]
        # in_proj's two halves as two products: x and z come out contiguous, so the
        # convs read x's channels-last view without a copy (chunking one product would
        # leave both strided). The gate's SiLU is fused into its product where linear fuses.
        weight = self.in_proj.weight
        x, z = linear(x, weight[:self.d_inner]), linear(x, weight[self.d_inner:],
                                                         activation='silu')
        x = x.permute(0, 3, 1, 2)
        # Inference updates the intermediate maps in place: a buffer and a pass over
        # memory less per op (updates_in_place).
        inplace = updates_in_place(x, self)
        act = silu_ if inplace else silu
        full = act(self.conv2d(x))
        # the low-resolution branch reads the pre-3x3 input, as in the official code
        low = act(self.conv2d_b1(x))
        y = self._scan_branch(full, 'row', self.FULL_RES_SLOT)
        y_low = F.interpolate(self._scan_branch(low, 'multiscale_low', self.LOW_RES_SLOT),
                              size=(height, width), mode='bilinear', align_corners=False)
        y = y.add_(y_low) if inplace else y + y_low
        if self.use_se:
            y = y.mul_(self.se.gate(y)) if inplace else self.se(y)
        y = y.permute(0, 2, 3, 1)
        y = z.mul_(y) if inplace else y * z
        return self.dropout(self.out_proj(y))


class MSVSSBlock(nn.Module):
    """Pre-norm block, channels-last: ``x + DP(MS2D(norm(x)))`` then
    ``x + DP(ConvFFN(norm2(x)))`` (one DropPath for both branches).

    Args:
        dim (int): C.
        d_inner (int): MS2D scanned channels.
        d_state (int), dt_rank (int): SSM sizes.
        drop_path (float): stochastic-depth rate.
        conv_bias (bool), use_se (bool): MS2D options.
        ffn_drop (float): ConvFFN dropout.
        ssm_drop (float): MS2D output dropout.
    """

    def __init__(self, dim: int, d_inner: int, d_state: int, dt_rank: int,
                 drop_path: float = 0.0, conv_bias: bool = True, use_se: bool = True,
                 ffn_drop: float = 0.0, ssm_drop: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.op = MultiScaleSS2D(dim, d_inner, d_state, dt_rank, conv_bias=conv_bias,
                                 use_se=use_se, dropout=ssm_drop)
        self.drop_path = DropPath(drop_path)
        self.convFFN = ConvFFN(dim, expansion=2, drop=ffn_drop)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        if updates_in_place(x, self):  # inference: the sums overwrite the branch outputs
            x = self.drop_path(self.op(self.norm(x))).add_(x)
            return self.drop_path(self.convFFN(self.norm2(x))).add_(x)
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.convFFN(self.norm2(x)))


def stage_widths(dims: Union[int, Sequence[int]], num_stages: int) -> List[int]:
    """Per-stage widths: an int C means C * 2**i (the official expansion)."""
    if isinstance(dims, int):
        return [dims * 2**i for i in range(num_stages)]
    dims = [int(d) for d in dims]
    if len(dims) != num_stages:
        raise ValueError(f'MSVMamba: dims {dims} must give one width per stage '
                         f'({num_stages} stages from depths)')
    return dims


@MODELS.register_module()
class MSVMamba(SSMBackbone):
    """MSVMamba backbone (official ``MM_VSSM`` with the multi-scale options).

    Returns a tuple of ``len(out_indices)`` maps in stage order, stage ``i`` being
    (B, C_i, H_i, W_i) with C_i = dims * 2**i, H_0 = floor(H / patch_size) and
    H_{i+1} = ceil(H_i / 2): the stage's block output before its downsample,
    normalised by ``outnorm{i}``. (The official wrapper's ``out_indices=()``, the last
    stage's un-normalised features channels-last, is not supported: every mmssm backbone
    returns a tuple of maps.)

    Presets (``arch``): ``'nano'`` (dims 48, depths 1-2-5-2), ``'micro'`` (64,
    1-2-5-2), ``'tiny'`` (96, 1-2-9-2). A dict needs ``dims`` (int base width or one
    width per stage) and ``depths``; optional ``d_state`` (1, or ``'auto'`` for
    ceil(C/6)), ``ssm_ratio`` (2.0), ``dt_rank`` (``'auto'`` = ceil(C/16), or int),
    ``use_se`` (True), ``conv_bias`` (True).

    Args:
        arch (str | dict): preset name or settings dict.
        in_channels (int): image channels.
        patch_size (int): stem conv kernel and stride.
        out_indices (Sequence[int]): stages whose outputs are returned.
        drop_path_rate (float): stochastic depth, linear over all blocks. The
            default 0.2 is what every official detection config really uses (inherited
            from the Swin base config) and the segmentation Tiny one; the official
            segmentation Nano/Micro configs inherit 0.3.
        ffn_drop_rate (float): ConvFFN dropout (0 in every official config).
        ssm_drop_rate (float): MS2D output dropout.
        frozen_stages (int): freeze the stem and the first ``frozen_stages`` stages
            (with their downsample and out-norm); -1 freezes nothing, 0 the stem
            (mmdet's ResNet / Swin semantics).
        norm_eval (bool): keep BatchNorm layers in eval mode (there are none here;
            kept for interface compatibility).
        with_cp (bool): activation checkpointing per block.
        pretrained (str, optional): deprecated, as in mmseg: a checkpoint path that
            becomes ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)`` (mmseg
            segmentors pass their ``pretrained`` here).
        init_cfg (dict | list, optional): e.g. ``dict(type='Pretrained',
            checkpoint=PATH)`` with an official or mmssm checkpoint.
    """
    family = 'msvmamba'
    arch_settings = {
        'nano': dict(dims=48, depths=(1, 2, 5, 2)),
        'micro': dict(dims=64, depths=(1, 2, 5, 2)),
        'tiny': dict(dims=96, depths=(1, 2, 9, 2)),
    }
    arch_defaults = dict(d_state=1, ssm_ratio=2.0, dt_rank='auto', use_se=True,
                         conv_bias=True)

    def __init__(self,
                 arch: Union[str, Mapping[str, Any]] = 'tiny',
                 in_channels: int = 3,
                 patch_size: int = 4,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.2,
                 ffn_drop_rate: float = 0.0,
                 ssm_drop_rate: float = 0.0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval,
                         pretrained=pretrained, init_cfg=init_cfg)
        settings = {**self.arch_defaults,
                    **resolve_arch(arch, self.arch_settings, ('dims', 'depths'),
                                   'MSVMamba', optional=self.arch_defaults)}
        depths = [int(d) for d in settings['depths']]
        if not depths or min(depths) < 1:
            raise ValueError(f'MSVMamba: depths must be positive, got {depths}')
        num_stages = len(depths)
        self.arch = settings
        self.depths = depths
        self.dims = stage_widths(settings['dims'], num_stages)
        self.num_stages = num_stages
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.with_cp = with_cp
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        self.out_indices = tuple(sorted(set(
            check_out_indices(out_indices, num_stages, 'MSVMamba'))))
        self._set_outputs([self.dims[i] for i in self.out_indices],
                          [patch_size * 2**i for i in self.out_indices])

        # Official indices: patch_embed.0 conv, .1 to channels-last, .2 LayerNorm.
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_channels, self.dims[0], patch_size, stride=patch_size),
            ToChannelsLast(), nn.LayerNorm(self.dims[0], eps=LN_EPS))
        rates = drop_path_rates(drop_path_rate, depths)
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(self.dims, depths)):
            d_inner = int(settings['ssm_ratio'] * dim)
            d_state = settings['d_state']
            d_state = math.ceil(dim / 6) if d_state == 'auto' else int(d_state)
            dt_rank = settings['dt_rank']
            dt_rank = math.ceil(dim / 16) if dt_rank == 'auto' else int(dt_rank)
            first = sum(depths[:i])
            blocks = nn.Sequential(*[
                MSVSSBlock(dim, d_inner, d_state, dt_rank, drop_path=rates[first + j],
                           conv_bias=settings['conv_bias'], use_se=settings['use_se'],
                           ffn_drop=ffn_drop_rate, ssm_drop=ssm_drop_rate)
                for j in range(depth)
            ])
            downsample = (PatchMerging2D(dim, self.dims[i + 1], eps=LN_EPS)
                          if i < num_stages - 1 else nn.Identity())
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks,
                                                         downsample=downsample)))
        for i in self.out_indices:
            self.add_module(f'outnorm{i}', nn.LayerNorm(self.dims[i], eps=LN_EPS))

        self.apply(_init_weights)
        self._freeze_stages()


    def output_shapes(self, height: int, width: int) -> List[Tuple[int, int, int]]:
        """(C_i, H_i, W_i) of every stage for an input of ``height`` x ``width``."""
        h, w = height // self.patch_size, width // self.patch_size
        shapes = []
        for dim in self.dims:
            shapes.append((dim, h, w))
            h, w = -(-h // 2), -(-w // 2)
        return shapes

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'MSVMamba expects images (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        if x.shape[2] < self.patch_size or x.shape[3] < self.patch_size:
            raise ValueError(f'MSVMamba: input {tuple(x.shape)} is smaller than the '
                             f'{self.patch_size}x{self.patch_size} patch')
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            stage_out = run_sequential(layer.blocks, x, self.with_cp)
            x = layer.downsample(stage_out)
            if i in self.out_indices:
                out = getattr(self, f'outnorm{i}')(stage_out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
