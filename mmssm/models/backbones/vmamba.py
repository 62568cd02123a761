"""VMamba backbones (MzeroMiko/VMamba): "VMamba" v2 and "Vanilla VMamba" v0.

Both generations are a stem, four stages of VSS blocks and a downsample at the end of
every stage but the last; a VSS block is a pre-norm residual SS2D token mixer (the
shared cross-scan core of :mod:`mmssm.models.layers.ss2d`) optionally followed by a
pre-norm residual MLP. The generations differ only in their parts:

============  ===============================  ====================================
part          v2 (tiny_s1l8 ... base_s1l20)    v0 (v0_tiny / v0_small / v0_base)
============  ===============================  ====================================
stem          two 3x3 stride-2 convs ('v2')    one 4x4 stride-4 conv ('v1')
downsample    3x3 stride-2 conv + LN ('v3')    Swin patch merging ('v1')
SS2D          no gate, conv without bias,      gated (x silu(z)), conv with bias,
              d_state 1                        d_state 16
MLP           ratio 4                          none (ratio 0)
============  ===============================  ====================================

Everything here runs channel-first (NCHW); the official channel-last variant
(``norm_layer='ln'``, used by the v0 downstream configs) computes the same function
with the same parameters. Outputs are the *pre-downsample* features of each selected
stage through a fresh LayerNorm ``outnorm{i}``, as the official ``MM_VSSM`` returns.

Module names follow the official checkpoints except inside the stem and the
downsample convs, whose official names are Sequential indices
(``patch_embed.0/.2/.5/.7``, ``downsample.1/.3``); :mod:`mmssm.converters.vmamba`
maps those.
"""
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmssm.registry import MODELS
from ..layers import (GELU, SS2D, DropPath, LayerNorm2d, Linear2d, PatchMerging2D, drop_path_rates,
                      fusable_activation)
from .base import (SSMBackbone, check_out_indices, init_linear_and_layernorm, resolve_arch,
                   run_sequential)

Tensor = torch.Tensor

ACTIVATIONS = {'gelu': GELU, 'silu': nn.SiLU, 'relu': nn.ReLU, 'sigmoid': nn.Sigmoid}


class PatchifyStem(nn.Module):
    """Patch embedding 'v1': one ``patch_size`` x ``patch_size`` conv with the same
    stride, then LayerNorm. (B, C_in, H, W) -> (B, C, floor(H/p), floor(W/p))."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 4,
                 patch_norm: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = LayerNorm2d(embed_dims) if patch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class ConvStem(nn.Module):
    """Patch embedding 'v2': two overlapping convs (kernel p/2 + 1, stride p/2,
    padding 1) with LayerNorm + GELU between them and LayerNorm after.

    (B, C_in, H, W) -> (B, C, H', W'), H' = ceil(H/4) for ``patch_size=4``.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 4,
                 patch_norm: bool = True):
        super().__init__()
        stride = patch_size // 2
        hidden = embed_dims // 2
        self.conv1 = nn.Conv2d(in_channels, hidden, stride + 1, stride=stride, padding=1)
        self.norm1 = LayerNorm2d(hidden) if patch_norm else nn.Identity()
        self.act = GELU()
        self.conv2 = nn.Conv2d(hidden, embed_dims, stride + 1, stride=stride, padding=1)
        self.norm2 = LayerNorm2d(embed_dims) if patch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        return self.norm2(self.conv2(x))


class ConvDownsample(nn.Module):
    """Stride-2 conv + LayerNorm. Downsample 'v3' (3x3, padding 1: H -> ceil(H/2))
    or 'v2' (2x2, no padding: H -> floor(H/2)).

    The blocks hand over channels-last maps; the conv gets a contiguous copy, on which
    CPU convolutions do not re-order their (large) weight on every call (2-3x faster
    for the deeper stages' convs)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=2,
                              padding=(kernel_size - 1) // 2)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x.contiguous()))


class PatchMergingDownsample(PatchMerging2D):
    """Downsample 'v1': Swin patch merging (LayerNorm 4C, then Linear 4C -> C_out) on
    NCHW maps. (B, C, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelMlp(nn.Module):
    """Pointwise MLP on NCHW maps: fc1 (C -> hidden) -> act -> dropout -> fc2 -> dropout."""

    def __init__(self, channels: int, hidden_channels: int, act: str = 'gelu',
                 drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear2d(channels, hidden_channels)
        self.act = ACTIVATIONS[act]()
        self.fc2 = Linear2d(hidden_channels, channels)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        fused = fusable_activation(self.act)
        if fused is not None and (not self.training or isinstance(self.drop, nn.Identity)):
            hidden = self.fc1(x, activation=fused)  # one pass (mmssm.ops.linear)
        else:
            hidden = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(hidden))


class VSSBlock(nn.Module):
    """x + DropPath(SS2D(LN(x))), then x + DropPath(MLP(LN(x))). NCHW in and out.

    Either branch is absent when its ratio is 0 (the v0 models have no MLP).

    Args:
        channels (int): C.
        ssm_ratio (float): SS2D width D = int(ssm_ratio * C); 0 disables the branch.
        d_state (int): N.
        dt_rank (int): R.
        gated (bool): SS2D output gate (v0).
        conv_bias (bool): bias of the SS2D depthwise conv.
        conv_kernel (int): SS2D depthwise conv kernel (odd).
        ssm_init (str): SS2D from-scratch init ('v0' or 'v2').
        ssm_drop_rate (float): dropout on the SS2D output.
        mlp_ratio (float): MLP hidden width int(mlp_ratio * C); 0 disables the branch.
        mlp_act (str): MLP activation name.
        mlp_drop_rate (float): MLP dropout.
        drop_path (float): stochastic depth rate of both branches.
    """

    def __init__(self, channels: int, ssm_ratio: float, d_state: int, dt_rank: int,
                 gated: bool, conv_bias: bool, conv_kernel: int, ssm_init: str,
                 ssm_drop_rate: float, mlp_ratio: float, mlp_act: str,
                 mlp_drop_rate: float, drop_path: float):
        super().__init__()
        if ssm_ratio > 0:
            self.norm = LayerNorm2d(channels)
            self.op = SS2D(channels, int(ssm_ratio * channels), d_state, dt_rank,
                           scan='cross', gated=gated, conv_bias=conv_bias,
                           conv_kernel=conv_kernel, init=ssm_init, dropout=ssm_drop_rate)
        else:
            self.norm = self.op = None
        self.drop_path = DropPath(drop_path)
        if mlp_ratio > 0:
            self.norm2 = LayerNorm2d(channels)
            self.mlp = ChannelMlp(channels, int(channels * mlp_ratio), mlp_act, mlp_drop_rate)
        else:
            self.norm2 = self.mlp = None

    def forward(self, x: Tensor) -> Tensor:
        if self.op is not None:
            x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class VSSStage(nn.Module):
    """``blocks`` at one resolution, then ``downsample`` to the next stage's width
    (Identity for the last stage). The official state dict groups them the same way
    (``layers.i.blocks.j`` / ``layers.i.downsample``)."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: Optional[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample if downsample is not None else nn.Identity()


_V2_FAMILY = dict(d_state=1, dt_rank='auto', mlp_ratio=4.0, gated=False, conv_bias=False,
                  patch_embed='v2', downsample='v3')
_V0_FAMILY = dict(d_state=16, dt_rank='auto', ssm_ratio=2.0, mlp_ratio=0.0, gated=True,
                  conv_bias=True, patch_embed='v1', downsample='v1')


@MODELS.register_module()
class VMamba(SSMBackbone):
    """VMamba backbone (v2 "VMamba" and v0 "Vanilla VMamba"), official-checkpoint exact.

    Args:
        arch (str | dict): a preset of :attr:`arch_settings` (named like
            ``shared/specs/keys/vmamba_<arch>.tsv``) or a dict with the keys
            ``depths`` (blocks per stage), ``dims`` (int C0, doubled per stage, or a
            list), ``d_state``, ``ssm_ratio``, ``mlp_ratio``, ``gated``, ``conv_bias``,
            ``patch_embed`` ('v1' | 'v2'), ``downsample`` ('v1' | 'v2' | 'v3') and
            optionally ``dt_rank`` ('auto' = ceil(C/16), or an int), ``patch_size`` (4),
            ``conv_kernel`` (3), ``patch_norm`` (True), ``ssm_init`` ('v0'),
            ``mlp_act`` ('gelu'), ``ssm_drop_rate`` (0), ``mlp_drop_rate`` (0),
            ``drop_path_rate`` (0.1).
        in_channels (int): input channels. Default 3.
        out_indices (Sequence[int]): stages whose features are returned (in stage
            order). Default (0, 1, 2, 3).
        drop_path_rate (float, optional): stochastic depth, linearly increasing over
            all blocks. None: the arch's value (the presets carry the official
            downstream value: T 0.2, S 0.3, B 0.6; v0 0.2 as in the detection configs,
            the v0 segmentation configs use 0.3).
        frozen_stages (int): freeze the stem and the first ``frozen_stages`` stages
            (each with its trailing downsample and out-norm); -1 freezes nothing, 0 the
            stem (mmdet's ResNet / Swin semantics).
        norm_eval (bool): keep BatchNorm layers in eval mode (VMamba has none; kept
            for the common backbone interface).
        with_cp (bool): gradient checkpointing per block.
        pretrained (str, optional): deprecated, as in mmseg: a checkpoint path that
            becomes ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)`` (mmseg
            segmentors pass their ``pretrained`` here).
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint=...)`` with
            an official VMamba checkpoint (classification ``#v2cls``/``#v0cls`` files,
            mmdet/mmseg checkpoints) or an mmssm one.

    Input (B, in_channels, H, W), any H, W >= 1 (patch_embed 'v1': >= patch_size).
    Output: tuple of (B, dims[i], H_i, W_i) for i in out_indices, strides 4/8/16/32
    (v2: H_i = ceil(H / 2**(i+2)); v0: floor(H/4), then ceil halvings).
    """
    family = 'vmamba'

    arch_settings: Dict[str, Dict[str, Any]] = {
        'tiny_s1l8': dict(_V2_FAMILY, dims=96, depths=(2, 2, 8, 2), ssm_ratio=1.0,
                          drop_path_rate=0.2),
        'tiny_s2l5': dict(_V2_FAMILY, dims=96, depths=(2, 2, 5, 2), ssm_ratio=2.0,
                          drop_path_rate=0.2),
        'small_s2l15': dict(_V2_FAMILY, dims=96, depths=(2, 2, 15, 2), ssm_ratio=2.0,
                            drop_path_rate=0.3),
        'base_s2l15': dict(_V2_FAMILY, dims=128, depths=(2, 2, 15, 2), ssm_ratio=2.0,
                           drop_path_rate=0.6),
        # classification-only releases: the classification yaml's drop path
        'small_s1l20': dict(_V2_FAMILY, dims=96, depths=(2, 2, 20, 2), ssm_ratio=1.0,
                            drop_path_rate=0.3),
        'base_s1l20': dict(_V2_FAMILY, dims=128, depths=(2, 2, 20, 2), ssm_ratio=1.0,
                           drop_path_rate=0.5),
        'v0_tiny': dict(_V0_FAMILY, dims=96, depths=(2, 2, 9, 2), drop_path_rate=0.2),
        'v0_small': dict(_V0_FAMILY, dims=96, depths=(2, 2, 27, 2), drop_path_rate=0.2),
        'v0_base': dict(_V0_FAMILY, dims=128, depths=(2, 2, 27, 2), drop_path_rate=0.2),
    }
    REQUIRED_ARCH_KEYS = ('depths', 'dims', 'd_state', 'ssm_ratio', 'mlp_ratio', 'gated',
                          'conv_bias', 'patch_embed', 'downsample')
    OPTIONAL_ARCH_KEYS = {'dt_rank': 'auto', 'patch_size': 4, 'conv_kernel': 3,
                          'patch_norm': True, 'ssm_init': 'v0', 'mlp_act': 'gelu',
                          'ssm_drop_rate': 0.0, 'mlp_drop_rate': 0.0,
                          'drop_path_rate': 0.1}

    def __init__(self,
                 arch: Union[str, Mapping[str, Any]] = 'tiny_s1l8',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: Optional[float] = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval,
                         pretrained=pretrained, init_cfg=init_cfg)
        settings = resolve_arch(arch, self.arch_settings, self.REQUIRED_ARCH_KEYS, 'VMamba',
                                optional=self.OPTIONAL_ARCH_KEYS)
        for key, default in self.OPTIONAL_ARCH_KEYS.items():
            settings.setdefault(key, default)
        if drop_path_rate is not None:
            settings['drop_path_rate'] = drop_path_rate
        self._validate(settings, in_channels)
        self.arch = settings
        depths = [int(d) for d in settings['depths']]
        dims = settings['dims']
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(len(depths))]
        dims = [int(d) for d in dims]
        if len(dims) != len(depths):
            raise ValueError(f'VMamba: arch has {len(depths)} depths but {len(dims)} dims '
                             f'({dims}); give one width per stage')
        self.depths, self.dims = depths, dims
        self.num_stages = len(depths)
        self.in_channels = in_channels
        self.out_indices = tuple(sorted(set(
            check_out_indices(out_indices, self.num_stages, 'VMamba'))))
        if not self.out_indices:
            raise ValueError('VMamba: out_indices must select at least one stage')
        self._set_outputs([dims[i] for i in self.out_indices],
                          [settings['patch_size'] * 2**i for i in self.out_indices])
        self.with_cp = with_cp

        stem = ConvStem if settings['patch_embed'] == 'v2' else PatchifyStem
        self.patch_embed = stem(in_channels, dims[0], settings['patch_size'],
                                settings['patch_norm'])

        rates = drop_path_rates(settings['drop_path_rate'], depths)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            channels = dims[i]
            dt_rank = settings['dt_rank']
            dt_rank = math.ceil(channels / 16) if dt_rank == 'auto' else int(dt_rank)
            blocks = [
                VSSBlock(channels, settings['ssm_ratio'], settings['d_state'], dt_rank,
                         settings['gated'], settings['conv_bias'], settings['conv_kernel'],
                         settings['ssm_init'], settings['ssm_drop_rate'],
                         settings['mlp_ratio'], settings['mlp_act'],
                         settings['mlp_drop_rate'], rates[sum(depths[:i]) + j])
                for j in range(depth)
            ]
            downsample = None
            if i < self.num_stages - 1:
                downsample = self._make_downsample(settings['downsample'], channels,
                                                   dims[i + 1])
            self.layers.append(VSSStage(blocks, downsample))
        for i in self.out_indices:
            self.add_module(f'outnorm{i}', LayerNorm2d(dims[i]))

        self.apply(init_linear_and_layernorm)
        self._freeze_stages()

    @staticmethod
    def _validate(settings: Dict[str, Any], in_channels: int) -> None:
        def fail(key, expected):
            raise ValueError(f'VMamba: arch {key}={settings[key]!r} is invalid; expected '
                             f'{expected}')

        if settings['patch_embed'] not in ('v1', 'v2'):
            fail('patch_embed', "'v1' (4x4 patchify) or 'v2' (two 3x3 convs)")
        if settings['downsample'] not in ('v1', 'v2', 'v3'):
            fail('downsample', "'v1' (patch merging), 'v2' (2x2 conv) or 'v3' (3x3 conv)")
        patch = settings['patch_size']
        if not isinstance(patch, int) or patch < 1 or (settings['patch_embed'] == 'v2'
                                                       and patch % 2):
            fail('patch_size', 'a positive int (even for patch_embed v2)')
        kernel = settings['conv_kernel']
        if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            fail('conv_kernel', 'an odd positive int')
        if settings['mlp_act'] not in ACTIVATIONS:
            fail('mlp_act', f'one of {sorted(ACTIVATIONS)}')
        if settings['ssm_init'] not in ('v0', 'v2'):
            fail('ssm_init', "'v0' or 'v2'")
        if settings['ssm_ratio'] < 0 or settings['mlp_ratio'] < 0:
            fail('ssm_ratio' if settings['ssm_ratio'] < 0 else 'mlp_ratio', 'a ratio >= 0')
        if int(settings['d_state']) < 1:
            fail('d_state', 'an int >= 1')
        if settings['dt_rank'] != 'auto' and (not isinstance(settings['dt_rank'], int)
                                              or settings['dt_rank'] < 1):
            fail('dt_rank', "'auto' or an int >= 1")
        if not settings['depths'] or any(int(d) < 0 for d in settings['depths']):
            fail('depths', 'a non-empty list of block counts')
        if not 0 <= settings['drop_path_rate'] < 1:
            fail('drop_path_rate', 'a rate in [0, 1)')
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f'VMamba: in_channels must be a positive int, got {in_channels!r}')

    @staticmethod
    def _make_downsample(version: str, in_channels: int, out_channels: int) -> nn.Module:
        if version == 'v1':
            return PatchMergingDownsample(in_channels, out_channels)
        return ConvDownsample(in_channels, out_channels, kernel_size=3 if version == 'v3' else 2)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f'VMamba expects input (B, {self.in_channels}, H, W), got {got}')
        if self.arch['patch_embed'] == 'v1' and min(x.shape[2:]) < self.arch['patch_size']:
            raise ValueError(f'VMamba: input {tuple(x.shape)} is smaller than the '
                             f'{self.arch["patch_size"]}x{self.arch["patch_size"]} patch')
        x = self.patch_embed(x)
        outs = []
        last = self.out_indices[-1]
        for i, stage in enumerate(self.layers[:last + 1]):
            feature = run_sequential(stage.blocks, x, self.with_cp)
            if i in self.out_indices:
                outs.append(getattr(self, f'outnorm{i}')(feature).contiguous())
            if i < last:  # later stages feed no output
                x = stage.downsample(feature)
        return tuple(outs)
