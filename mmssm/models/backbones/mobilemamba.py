"""MobileMamba (CVPR 2025): a lightweight three-stage hybrid of convolutions and
bidirectional selective scans.

Layout (official key names are kept, so official checkpoints load after dropping the
classifier):

    patch_embed   4 x (3x3 stride-2 Conv2d_BN), ReLU between      -> C1 @ stride 16
    blocks1       depth[0] x MobileMambaBlock(C1)                 -> C1 @ stride 16
    blocks2       [pre unit(C1), PatchMerging(C1->C2), post unit(C2),
                   depth[1] x MobileMambaBlock(C2)]               -> C2 @ stride 32
    blocks3       same pattern with C2 -> C3                      -> C3 @ stride 64

A MobileMambaBlock is dw-conv, FFN, the MRFFI token mixer, dw-conv, FFN (each inside a
residual) plus an outer skip, so the identity path is counted twice (an upstream quirk
the checkpoints were trained with). MRFFI splits the channels into a global part
(WTE-Mamba: a bidirectional SS2D at full resolution plus a one-level Haar-wavelet
branch), a local part (MK-DeConv: one depthwise kernel size per stage) and an identity
part.

Every ``Conv2d_BN`` (and the MK-DeConv conv/BN pairs) can be folded into plain
convolutions for inference with :meth:`MobileMamba.switch_to_deploy`; a model built
with ``deploy=True`` has that fused layout from the start (the layout of fused
official checkpoints: ``X.c.weight`` + ``X.bn.*`` become ``X.weight`` + ``X.bias``).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmssm.ops.scan_lowering import pad_to_multiple
from mmssm.registry import MODELS
from ..layers import SS2D, ChannelScaleConv, DropPath, SqueezeExcite, drop_path_rates
from .base import SSMBackbone, check_out_indices, resolve_arch, run_sequential

Tensor = torch.Tensor

BN_EPS = 1e-5  # every official BatchNorm uses the PyTorch default


# --------------------------------------------------------------------------------------
# Conv + BN and its fusion
# --------------------------------------------------------------------------------------
def fuse_conv_bn_weights(conv_weight: Tensor, bn_weight: Tensor, bn_bias: Tensor,
                         running_mean: Tensor, running_var: Tensor,
                         eps: float = BN_EPS) -> Tuple[Tensor, Tensor]:
    """Fold an inference-mode BatchNorm into the bias-free conv before it.

    ``bn(conv(x)) = conv'(x)`` with ``W' = W * s`` and ``b' = beta - mean * s`` where
    ``s = gamma / sqrt(var + eps)`` per output channel. Shared by the module fusion and
    the state-dict fusion in :mod:`mmssm.converters.mobilemamba`.
    """
    scale = bn_weight / torch.sqrt(running_var + eps)
    weight = conv_weight * scale.view(-1, *([1] * (conv_weight.dim() - 1)))
    bias = bn_bias - running_mean * scale
    return weight, bias


class Conv2d_BN(nn.Module):  # noqa: N801 - the official class name (checkpoint layout)
    """Bias-free ``Conv2d`` (``c``) followed by ``BatchNorm2d`` (``bn``).

    Args:
        in_channels, out_channels (int): channels.
        kernel_size, stride, padding, groups (int): of the convolution.
        bn_weight_init (float): initial BN scale (0 makes a residual branch start
            as identity).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, groups: int = 1,
                 bn_weight_init: float = 1.0):
        super().__init__()
        self.c = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                           groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.bn_weight_init = bn_weight_init
        self.reset_bn()

    @torch.no_grad()
    def reset_bn(self) -> None:
        """The official BN init: scale ``bn_weight_init``, zero shift."""
        nn.init.constant_(self.bn.weight, self.bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.c(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """The equivalent single convolution (with bias) for inference."""
        c, bn = self.c, self.bn
        fused = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride,
                          c.padding, groups=c.groups, bias=True,
                          device=c.weight.device, dtype=c.weight.dtype)
        weight, bias = fuse_conv_bn_weights(c.weight, bn.weight, bn.bias,
                                            bn.running_mean, bn.running_var, bn.eps)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        return fused


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
            padding: int = 0, groups: int = 1, bn_weight_init: float = 1.0,
            deploy: bool = False) -> nn.Module:
    """A :class:`Conv2d_BN`, or in the fused ``deploy`` layout a ``Conv2d`` with bias."""
    if deploy:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                         groups=groups, bias=True)
    return Conv2d_BN(in_channels, out_channels, kernel_size, stride, padding, groups,
                     bn_weight_init)


def fuse_modules(module: nn.Module) -> nn.Module:
    """Replace, recursively and in place, every submodule that has a ``fuse()`` method
    by what it returns (the inference form without BatchNorm). Returns ``module``."""
    for name, child in list(module.named_children()):
        if callable(getattr(child, 'fuse', None)):
            setattr(module, name, child.fuse())
        else:
            fuse_modules(child)
    return module


# --------------------------------------------------------------------------------------
# Small conv modules
# --------------------------------------------------------------------------------------
class Residual(nn.Module):
    """``x + m(x)`` (weights under ``m``)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return x + self.m(x)


class FFN(nn.Module):
    """Pointwise FFN: 1x1 Conv2d_BN ``channels -> hidden``, ReLU, 1x1 Conv2d_BN back.
    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, hidden_channels: int, deploy: bool = False):
        super().__init__()
        self.pw1 = conv_bn(channels, hidden_channels, deploy=deploy)
        self.act = nn.ReLU()
        self.pw2 = conv_bn(hidden_channels, channels, bn_weight_init=0.0, deploy=deploy)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw2(self.act(self.pw1(x)))


def se_reduced_channels(channels: int, ratio: float = 0.25, divisor: int = 8) -> int:
    """Squeeze width: ``channels * ratio`` rounded to the nearest multiple of
    ``divisor`` (halves up), at least ``divisor`` (timm's ``make_divisible`` with
    ``round_limit=0``, as its ``SEModule`` uses)."""
    return max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)


class PatchMerging(nn.Module):
    """Inverted-bottleneck 2x downsampling, no residual.

    1x1 Conv2d_BN ``C -> 4C``, ReLU, depthwise 3x3 stride-2 Conv2d_BN, ReLU, SE,
    1x1 Conv2d_BN ``4C -> out``. (B, C, H, W) -> (B, out, ceil(H/2), ceil(W/2)).
    """

    def __init__(self, in_channels: int, out_channels: int, deploy: bool = False):
        super().__init__()
        hidden = 4 * in_channels
        self.conv1 = conv_bn(in_channels, hidden, deploy=deploy)
        self.act = nn.ReLU()
        self.conv2 = conv_bn(hidden, hidden, 3, 2, 1, groups=hidden, deploy=deploy)
        self.se = SqueezeExcite(hidden, se_reduced_channels(hidden, 0.25))
        self.conv3 = conv_bn(hidden, out_channels, deploy=deploy)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.conv3(self.se(x))


def downsample_neighbour(channels: int, deploy: bool = False) -> nn.Sequential:
    """The unit before/after each PatchMerging: residual depthwise 3x3 Conv2d_BN, then
    residual FFN (C -> 2C -> C)."""
    return nn.Sequential(
        Residual(conv_bn(channels, channels, 3, 1, 1, groups=channels, deploy=deploy)),
        Residual(FFN(channels, 2 * channels, deploy=deploy)))


class MKDeConv(nn.Module):
    """MK-DeConv, MRFFI's local branch: depthwise ``k x k`` conv (``dwconv3x3`` whatever
    ``k``), BN, ReLU, per-channel scale as a depthwise 1x1 conv (``dwconv1x1``), BN.
    (B, C, H, W) -> (B, C, H, W). :meth:`fuse` gives ``Sequential(conv k x k, ReLU,
    conv 1x1)`` with biases, the fused layout (keys ``0.*`` and ``2.*``)."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.dwconv3x3 = nn.Conv2d(channels, channels, kernel_size, 1, kernel_size // 2,
                                   groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.dwconv1x1 = ChannelScaleConv(channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.dwconv3x3(x)))
        return self.bn2(self.dwconv1x1(x))

    @staticmethod
    def fused_layout(channels: int, kernel_size: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, 1, kernel_size // 2, groups=channels,
                      bias=True),
            nn.ReLU(inplace=True),
            ChannelScaleConv(channels, bias=True))

    @torch.no_grad()
    def fuse(self) -> nn.Sequential:
        channels, kernel = self.dwconv3x3.out_channels, self.dwconv3x3.kernel_size[0]
        fused = self.fused_layout(channels, kernel).to(self.dwconv3x3.weight)
        for conv, bn, target in ((self.dwconv3x3, self.bn1, fused[0]),
                                 (self.dwconv1x1, self.bn2, fused[2])):
            weight, bias = fuse_conv_bn_weights(conv.weight, bn.weight, bn.bias,
                                                bn.running_mean, bn.running_var, bn.eps)
            target.weight.copy_(weight)
            target.bias.copy_(bias)
        return fused


# --------------------------------------------------------------------------------------
# WTE-Mamba: SS2D + one-level Haar wavelet branch
# --------------------------------------------------------------------------------------
def haar_filters(channels: int) -> Tensor:
    """(4*C, 1, 2, 2) Haar analysis filters, sub-bands c-major: LL, H-detail (rows
    differ), W-detail (columns differ), diagonal. The synthesis filters of the
    orthonormal Haar pair are the same numbers."""
    lo = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)
    hi = torch.tensor([1.0, -1.0]) / math.sqrt(2.0)
    # band[i, j]: i runs along H, j along W.
    bands = torch.stack([torch.outer(lo, lo), torch.outer(hi, lo),
                         torch.outer(lo, hi), torch.outer(hi, hi)])
    return bands[:, None].repeat(channels, 1, 1, 1)


def wavelet_transform(x: Tensor, filters: Tensor) -> Tensor:
    """(B, C, H, W) with even H, W -> (B, C, 4, H/2, W/2) using the per-channel
    ``filters`` (4C, 1, 2, 2)."""
    batch, channels, height, width = x.shape
    bands = F.conv2d(x, filters.to(x.dtype), stride=2, groups=channels)
    return bands.view(batch, channels, 4, height // 2, width // 2)


def inverse_wavelet_transform(bands: Tensor, filters: Tensor) -> Tensor:
    """(B, C, 4, h, w) -> (B, C, 2h, 2w): grouped stride-2 transposed conv with
    ``filters`` (4C, 1, 2, 2)."""
    batch, channels, _, height, width = bands.shape
    bands = bands.reshape(batch, 4 * channels, height, width)
    return F.conv_transpose2d(bands, filters.to(bands.dtype), stride=2, groups=channels)


class BidirectionalSS2D(SS2D):
    """MobileMamba's SS2D: bidirectional scan, gated, d_state 1, Conv2d_BN projections.

    The two routes merge per sample (as the official CUDA path does). The official
    pure-PyTorch fallback, which produced the official CPU reference outputs, mixes
    the samples of a batch in its merge; the parity tests reproduce that quirk in
    their own helpers, it is not an option of this model.
    """

    def __init__(self, channels: int, ssm_ratio: float = 2.0, deploy: bool = False):
        super().__init__(
            channels, int(ssm_ratio * channels), d_state=1, dt_rank=math.ceil(channels / 16),
            scan='bidirectional', gated=True, conv_bias=True, conv_kernel=3,
            projection=lambda cin, cout: conv_bn(cin, cout, deploy=deploy), init='v2')


class ChannelScale(nn.Module):
    """Per-channel learnable scale, ``weight`` of shape (1, C, 1, 1)."""

    def __init__(self, channels: int, init_value: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((1, channels, 1, 1), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


class WTEMamba(nn.Module):
    """WTE-Mamba, MRFFI's global branch (official ``MBWTConv2d``).

    ``base_scale * SS2D(x) + IWT(wavelet_scale * dwconv_k(WT(pad(x))))[:H, :W]``.
    The SS2D (bidirectional scan, gated, d_state 1, Conv2d_BN projections) sees the
    full-resolution input; the wavelet branch zero-pads odd sizes at the bottom/right,
    filters all four Haar sub-bands (LL included) with one depthwise ``k x k`` conv and
    a per-band scale, inverts and crops. ``wt_filter``/``iwt_filter`` are the fixed
    Haar filters, kept as (persistent) buffers: they are in the state dict under the
    official names and load from official checkpoints, which hold them as frozen
    parameters (as loaded values are used), but optimizers never see them. The official
    parameter counts include them (:attr:`official_parameters`).

    Args:
        channels (int): C, the global part of the MRFFI split.
        kernel_size (int): k of the sub-band conv.
        ssm_ratio (float): SS2D inner width ``int(ssm_ratio * C)``.
        deploy (bool): build the SS2D projections in the BN-fused layout.
    """
    #: buffers the official model holds as frozen ``nn.Parameter`` s (its reported
    #: parameter totals count them; see ``mmssm.apis.analysis.count_params``)
    official_parameters = ('wt_filter', 'iwt_filter')

    def __init__(self, channels: int, kernel_size: int, ssm_ratio: float = 2.0,
                 deploy: bool = False):
        super().__init__()
        self.channels = channels
        filters = haar_filters(channels)
        self.register_buffer('wt_filter', filters.clone())
        self.register_buffer('iwt_filter', filters.clone())
        self.global_atten = BidirectionalSS2D(channels, ssm_ratio, deploy)
        self.base_scale = ChannelScale(channels, 1.0)
        self.wavelet_convs = nn.ModuleList([
            nn.Conv2d(4 * channels, 4 * channels, kernel_size, padding=kernel_size // 2,
                      groups=4 * channels, bias=False)
        ])
        self.wavelet_scale = nn.ModuleList([ChannelScale(4 * channels, 0.1)])

    def wavelet_branch(self, x: Tensor) -> Tensor:
        height, width = x.shape[2:]
        x = pad_to_multiple(x, 2, dims=(2, 3))  # odd maps: zero row/column at the end
        bands = wavelet_transform(x, self.wt_filter)
        shape = bands.shape
        bands = bands.reshape(shape[0], 4 * self.channels, *shape[3:])
        bands = self.wavelet_scale[0](self.wavelet_convs[0](bands)).view(shape)
        return inverse_wavelet_transform(bands, self.iwt_filter)[:, :, :height, :width]

    def forward(self, x: Tensor) -> Tensor:
        return self.base_scale(self.global_atten(x)) + self.wavelet_branch(x)


# --------------------------------------------------------------------------------------
# MRFFI and the block
# --------------------------------------------------------------------------------------
def nearest_multiple_of_16(value: int) -> int:
    """Nearest multiple of 16; a value exactly between two rounds up."""
    lower = value // 16 * 16
    return lower if value - lower < 8 else lower + 16


def mrffi_split(channels: int, global_ratio: float, local_ratio: float) -> Tuple[int, int, int]:
    """(global, local, identity) channel counts of the MRFFI split.

    global = nearest multiple of 16 to ``floor(global_ratio * C)``; local =
    ``floor(local_ratio * C)``, or ``C - global`` when the two would exceed C;
    identity = the rest. (Floors use the float product, as upstream does.)
    """
    global_channels = nearest_multiple_of_16(int(global_ratio * channels))
    local_channels = int(local_ratio * channels)
    if global_channels + local_channels > channels:
        local_channels = channels - global_channels
    identity = channels - global_channels - local_channels
    if local_channels < 0 or identity < 0:
        raise ValueError(f'MRFFI: global_ratio {global_ratio} gives {global_channels} '
                         f'global channels, more than the {channels} available')
    return global_channels, local_channels, identity


class MRFFI(nn.Module):
    """Multi-Receptive Field Feature Interaction (official ``MobileMambaModule``).

    Channels [global | local | identity] -> [WTE-Mamba | MK-DeConv | unchanged],
    concatenated in that order, then ``proj`` = ReLU + 1x1 Conv2d_BN.
    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, global_ratio: float, local_ratio: float,
                 kernel_size: int, ssm_ratio: float = 2.0, deploy: bool = False):
        super().__init__()
        self.split = mrffi_split(channels, global_ratio, local_ratio)
        global_channels, local_channels, _ = self.split
        if local_channels == 0:
            self.local_op = nn.Identity()
        elif deploy:
            self.local_op = MKDeConv.fused_layout(local_channels, kernel_size)
        else:
            self.local_op = MKDeConv(local_channels, kernel_size)
        self.global_op = (WTEMamba(global_channels, kernel_size, ssm_ratio, deploy)
                          if global_channels else nn.Identity())
        self.proj = nn.Sequential(
            nn.ReLU(), conv_bn(channels, channels, bn_weight_init=0.0, deploy=deploy))

    def forward(self, x: Tensor) -> Tensor:
        global_part, local_part, identity = torch.split(x, self.split, dim=1)
        x = torch.cat([self.global_op(global_part), self.local_op(local_part), identity],
                      dim=1)
        return self.proj(x)


class MRFFIWindow(nn.Module):
    """Holds the mixer as ``attn`` (official ``MobileMambaBlockWindow`` key layout)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x)


class MobileMambaBlock(nn.Module):
    """``x + drop_path(ffn1(dw1(mixer(ffn0(dw0(x))))))`` where each of dw0, ffn0, mixer,
    dw1, ffn1 is itself residual: the identity is counted twice, as in the official
    model. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, global_ratio: float, local_ratio: float,
                 kernel_size: int, ssm_ratio: float = 2.0, drop_path: float = 0.0,
                 deploy: bool = False):
        super().__init__()

        def depthwise():
            return Residual(conv_bn(channels, channels, 3, 1, 1, groups=channels,
                                    bn_weight_init=0.0, deploy=deploy))

        self.dw0 = depthwise()
        self.ffn0 = Residual(FFN(channels, 2 * channels, deploy))
        self.mixer = Residual(MRFFIWindow(
            MRFFI(channels, global_ratio, local_ratio, kernel_size, ssm_ratio, deploy)))
        self.dw1 = depthwise()
        self.ffn1 = Residual(FFN(channels, 2 * channels, deploy))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        branch = self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))
        return x + self.drop_path(branch)


# --------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------
_SHARED = dict(global_ratios=[0.8, 0.7, 0.6], local_ratios=[0.2, 0.2, 0.3],
               kernel_sizes=[7, 5, 3], ssm_ratio=2.0)


@MODELS.register_module()
class MobileMamba(SSMBackbone):
    """MobileMamba backbone (downstream form: no classifier).

    Returns, selected by ``out_indices`` and in this order, the maps
    ``[stem (C1 @ 16), blocks1 (C1 @ 16), blocks2 (C2 @ 32), blocks3 (C3 @ 64)]`` of an
    input (B, in_channels, H, W); every stride-2 step maps a side ``s`` to ``ceil(s/2)``.

    Args:
        arch (str | dict): preset ``'t2' | 't4' | 's6' | 'b1' | 'b2' | 'b4'`` (the "†"
            distilled checkpoints use the same presets) or a dict with ``embed_dims``
            (3 ints) and ``depths`` (3 ints), optionally ``global_ratios``,
            ``local_ratios`` (3 floats each), ``kernel_sizes`` (3 odd ints),
            ``ssm_ratio`` (float) and ``drop_path_rate``.
        in_channels (int): input channels.
        out_indices (Sequence[int]): which of the four maps above to return;
            default (1, 2, 3) as in the official detection/segmentation configs.
        frozen_stages (int): freeze the stem and the first ``frozen_stages`` stages
            (``blocks1 .. blocks{n}``); -1 freezes nothing, 0 the stem (mmdet's ResNet /
            Swin semantics). (The official wrapper crashes for n >= 0.)
        norm_eval (bool): keep BatchNorms in eval mode during training.
        drop_path_rate (float, optional): stochastic depth, linear over all blocks;
            None uses the preset's value (0 for t2/t4/s6, 0.03 for b1/b2/b4).
        with_cp (bool): gradient checkpointing per block.
        deploy (bool): build the BN-fused inference layout (for fused checkpoints);
            see :meth:`switch_to_deploy`.
        pretrained (str, optional): deprecated, as in mmseg: a checkpoint path that
            becomes ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)`` (mmseg
            segmentors pass their ``pretrained`` here).
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint=PATH)``;
            official checkpoints (flat or nested under ``net``/``net_E``, fused or not,
            with or without the classifier) load through
            :mod:`mmssm.converters.mobilemamba`.
    """
    family = 'mobilemamba'
    num_stages = 3
    arch_settings: Dict[str, dict] = {
        't2': dict(embed_dims=[144, 272, 368], depths=[1, 2, 2], drop_path_rate=0.0,
                   **_SHARED),
        't4': dict(embed_dims=[176, 368, 448], depths=[1, 2, 2], drop_path_rate=0.0,
                   **_SHARED),
        's6': dict(embed_dims=[192, 384, 448], depths=[1, 2, 2], drop_path_rate=0.0,
                   **_SHARED),
        'b1': dict(embed_dims=[200, 376, 448], depths=[2, 3, 2], drop_path_rate=0.03,
                   **_SHARED),
        'b2': dict(embed_dims=[200, 376, 448], depths=[2, 3, 2], drop_path_rate=0.03,
                   **_SHARED),
        'b4': dict(embed_dims=[200, 376, 448], depths=[2, 3, 2], drop_path_rate=0.03,
                   **_SHARED),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'b1',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 drop_path_rate: Optional[float] = None,
                 with_cp: bool = False,
                 deploy: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval,
                         pretrained=pretrained, init_cfg=init_cfg)
        settings = resolve_arch(arch, self.arch_settings, ('embed_dims', 'depths'),
                                'MobileMamba', optional=tuple(_SHARED) + ('drop_path_rate', ))
        settings = {**_SHARED, 'drop_path_rate': 0.0, **settings}
        self._check_settings(settings)
        if drop_path_rate is None:
            drop_path_rate = settings['drop_path_rate']
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'MobileMamba: drop_path_rate must be in [0, 1), got '
                             f'{drop_path_rate}')
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f'MobileMamba: in_channels must be a positive int, got '
                             f'{in_channels!r}')
        self.arch = settings
        self.embed_dims = list(settings['embed_dims'])
        self.depths = list(settings['depths'])
        self.in_channels = in_channels
        self.out_indices = check_out_indices(out_indices, self.num_stages + 1, 'MobileMamba')
        self.drop_path_rate = drop_path_rate
        self.with_cp = with_cp
        self.deploy = deploy
        # stem, blocks1, blocks2, blocks3: the stem and blocks1 share stride 16
        channels, strides = [self.embed_dims[0]] + self.embed_dims, (16, 16, 32, 64)
        order = sorted(set(self.out_indices))  # forward returns them in stage order
        self._set_outputs([channels[i] for i in order], [strides[i] for i in order])

        c1 = self.embed_dims[0]
        stem = [in_channels, c1 // 8, c1 // 4, c1 // 2, c1]
        layers = []
        for i in range(4):
            if i:
                layers.append(nn.ReLU())
            layers.append(conv_bn(stem[i], stem[i + 1], 3, 2, 1, deploy=deploy))
        self.patch_embed = nn.Sequential(*layers)

        rates = drop_path_rates(drop_path_rate, self.depths)
        for stage, (dim, depth) in enumerate(zip(self.embed_dims, self.depths)):
            modules = []
            if stage > 0:
                prev = self.embed_dims[stage - 1]
                modules += [downsample_neighbour(prev, deploy),
                            PatchMerging(prev, dim, deploy),
                            downsample_neighbour(dim, deploy)]
            first = sum(self.depths[:stage])
            for j in range(depth):
                modules.append(MobileMambaBlock(
                    dim, settings['global_ratios'][stage], settings['local_ratios'][stage],
                    settings['kernel_sizes'][stage], settings['ssm_ratio'],
                    rates[first + j], deploy))
            self.add_module(f'blocks{stage + 1}', nn.Sequential(*modules))
        self._freeze_stages()

    @staticmethod
    def _check_settings(settings: dict) -> None:
        for key in ('embed_dims', 'depths', 'global_ratios', 'local_ratios', 'kernel_sizes'):
            value = settings[key]
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise ValueError(f'MobileMamba: arch {key!r} must list 3 values (one per '
                                 f'stage), got {value!r}')
        for dim in settings['embed_dims']:
            if not isinstance(dim, int) or dim < 8:
                raise ValueError(f'MobileMamba: embed_dims must be ints >= 8, got '
                                 f'{settings["embed_dims"]}')
        if any(not isinstance(d, int) or d < 0 for d in settings['depths']):
            raise ValueError(f'MobileMamba: depths must be ints >= 0, got {settings["depths"]}')
        if any(not isinstance(k, int) or k < 1 or k % 2 == 0
               for k in settings['kernel_sizes']):
            raise ValueError(f'MobileMamba: kernel_sizes must be odd positive ints, got '
                             f'{settings["kernel_sizes"]}')
        for g, loc in zip(settings['global_ratios'], settings['local_ratios']):
            if not (0.0 <= g <= 1.0 and 0.0 <= loc <= 1.0):
                raise ValueError(f'MobileMamba: global/local ratios must be in [0, 1], got '
                                 f'{settings["global_ratios"]} / {settings["local_ratios"]}')
        for dim, g, loc in zip(settings['embed_dims'], settings['global_ratios'],
                               settings['local_ratios']):
            mrffi_split(dim, g, loc)  # raises for an impossible split
        if settings['ssm_ratio'] <= 0:
            raise ValueError(f'MobileMamba: ssm_ratio must be > 0, got {settings["ssm_ratio"]}')

    @property
    def stages(self) -> List[nn.Sequential]:
        return [self.blocks1, self.blocks2, self.blocks3]

    def stage_modules(self, index: int) -> List[nn.Module]:
        return [self.stages[index]]

    def reset_ssm_parameters(self) -> None:
        """The SSM initialisation ('v2': A = -1, D = 1, small dt) and MobileMamba's
        residual-branch BatchNorms, whose scale starts at 0 (``bn_weight_init``)."""
        super().reset_ssm_parameters()
        for module in self.modules():
            if isinstance(module, Conv2d_BN):
                module.reset_bn()

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'MobileMamba expects input (B, {self.in_channels}, H, W), got '
                             f'{tuple(x.shape)}')
        x = self.patch_embed(x)
        outs = [x] if 0 in self.out_indices else []
        for index, stage in enumerate(self.stages, start=1):
            if index > max(self.out_indices):
                break
            x = run_sequential(stage, x, self.with_cp)
            if index in self.out_indices:
                outs.append(x)
        return tuple(outs)

    @torch.no_grad()
    def switch_to_deploy(self) -> 'MobileMamba':
        """Fold every BatchNorm into the convolution before it, in place, for inference.

        Outputs are unchanged (up to float rounding) in eval mode; training afterwards
        has no BatchNorm. The state dict then has the layout of fused official
        checkpoints. Idempotent; returns ``self``.
        """
        if not self.deploy:
            fuse_modules(self)
            self.deploy = True
            self._freeze_stages()  # the fused convs are new parameters
        return self
