"""Simple feature pyramid (ViTDet, arXiv 2203.16527) for plain backbones such as Vim.

A plain backbone produces one map at a single stride (16 for Vim). The pyramid is built
from that map alone: parallel deconvolutions / identity / max-pooling give the scales
``scale_factors`` (default 4, 2, 1, 1/2: strides 4, 8, 16, 32), each followed by a 1x1
and a 3x3 convolution to ``out_channels`` with a norm; extra levels (``num_outs``
beyond the scales) are max-pooled with stride 2 from the last level (ViTDet's
``LastLevelMaxPool``, giving P6).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmssm.registry import MODELS
from ..layers import PYRAMID_SCALES, LayerNorm2d, pyramid_resample

Tensor = torch.Tensor


def build_norm2d(norm_cfg: Optional[dict], channels: int) -> Optional[nn.Module]:
    """NCHW norm from ``dict(type='LN' | 'LN2d' | 'BN' | 'SyncBN' | 'GN', eps=...,
    num_groups=...)``; None for no norm."""
    if norm_cfg is None:
        return None
    cfg = dict(norm_cfg)
    kind = cfg.pop('type', None)
    eps = cfg.pop('eps', 1e-6 if kind in ('LN', 'LN2d') else 1e-5)
    num_groups = cfg.pop('num_groups', 32)
    if cfg:
        raise ValueError(f'SimpleFPN: unsupported norm_cfg keys {sorted(cfg)}')
    if kind in ('LN', 'LN2d'):
        return LayerNorm2d(channels, eps=eps)
    if kind == 'BN':
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == 'SyncBN':
        return nn.SyncBatchNorm(channels, eps=eps)
    if kind == 'GN':
        return nn.GroupNorm(num_groups, channels, eps=eps)
    raise ValueError(f"SimpleFPN: norm_cfg type must be 'LN', 'LN2d', 'BN', 'SyncBN' or "
                     f"'GN', got {kind!r}")


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int,
               norm_cfg: Optional[dict]) -> nn.Sequential:
    norm = build_norm2d(norm_cfg, out_channels)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                     bias=norm is None)
    return nn.Sequential(conv, norm) if norm is not None else nn.Sequential(conv)


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """ViTDet-style simple feature pyramid from one backbone map.

    Args:
        in_channels (int): C of the backbone map.
        out_channels (int): channels of every output level.
        scale_factors (Sequence[float]): resampling of the input per level, from
            {4, 2, 1, 0.5, 0.25}: 4 = deconv (C -> C/2), norm, GELU, deconv
            (C/2 -> C/4); 2 = deconv (C -> C/2); 1 = identity; 0.5 / 0.25 = max-pool.
        num_outs (int): output levels; those beyond ``len(scale_factors)`` are
            ``max_pool2d(kernel 1, stride 2)`` of the previous level.
        norm_cfg (dict, optional): norm after the first deconv and after each conv
            (ViTDet: channel LayerNorm); None for none (the convs then get biases).
        in_index (int): which element of the backbone output tuple to use.
        init_cfg (dict, optional): mmengine init config.

    Input: a tensor (B, C, H, W) or a sequence of them. Output: tuple of ``num_outs``
    maps (B, out_channels, ~H*s, ~W*s), finest first.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5,
                 norm_cfg: Optional[dict] = dict(type='LN'),
                 in_index: int = -1,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        scale_factors = tuple(float(s) for s in scale_factors)
        if not scale_factors or any(s not in PYRAMID_SCALES for s in scale_factors):
            raise ValueError(f'SimpleFPN: scale_factors must be non-empty values from '
                             f'{PYRAMID_SCALES}, got {scale_factors}')
        if num_outs < len(scale_factors):
            raise ValueError(f'SimpleFPN: num_outs ({num_outs}) must be at least the number '
                             f'of scale_factors ({len(scale_factors)})')
        divisor = 4 if 4.0 in scale_factors else 2 if 2.0 in scale_factors else 1
        if in_channels % divisor:
            raise ValueError(f'SimpleFPN: in_channels ({in_channels}) must be divisible by '
                             f'{divisor} for scale_factors {scale_factors}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = scale_factors
        self.num_outs = num_outs
        self.in_index = in_index

        norm = None if norm_cfg is None else (lambda c: build_norm2d(norm_cfg, c))
        self.stages = nn.ModuleList()
        for scale in scale_factors:
            resample, dim = pyramid_resample(scale, in_channels, norm)
            self.stages.append(nn.ModuleDict(dict(
                resample=resample,
                lateral=_conv_norm(dim, out_channels, 1, norm_cfg),
                output=_conv_norm(out_channels, out_channels, 3, norm_cfg))))
        self._init_convs()

    @torch.no_grad()
    def _init_convs(self) -> None:
        # ViTDet (detectron2 c2_xavier_fill): kaiming-uniform with a=1, zero bias.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, inputs: Union[Tensor, Sequence[Tensor]]) -> Tuple[Tensor, ...]:
        x = inputs if isinstance(inputs, Tensor) else inputs[self.in_index]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SimpleFPN expects (B, {self.in_channels}, H, W), got '
                             f'{tuple(x.shape)}')
        outs = [stage['output'](stage['lateral'](stage['resample'](x)))
                for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)

    def output_strides(self, input_stride: int) -> List[float]:
        """Stride of every output level for an input map of ``input_stride``."""
        strides = [input_stride / s for s in self.scale_factors]
        while len(strides) < self.num_outs:
            strides.append(strides[-1] * 2)
        return strides
