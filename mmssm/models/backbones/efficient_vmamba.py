"""EfficientVMamba (Pei et al., "EfficientVMamba: Atrous Selective Scan for Light Weight
Visual Mamba", AAAI 2025) as an OpenMMLab backbone.

Layout of the network (C_i = stage width, features channels-last between stages as in
the official code)::

    stem:       Conv4x4/4 -> LayerNorm                                   /4
    stage 0, 1: EVSS blocks (ES2D atrous selective scan || conv branch,
                fused by a shared channel gate), then PatchMerging2D       /4, /8
    stage 2, 3: inverted-residual (MobileNetV2 + SE) blocks,
                then PatchMerging2D (stage 2) / nothing (stage 3)          /16, /32
    outnorm{i}: LayerNorm on the pre-downsample output of stage i, returned NCHW

The ES2D token mixer is the shared :class:`~mmssm.models.layers.SS2D` with
``scan='atrous'``: four routes, one per pixel parity of the zero-padded map (step 2),
routes 1 and 3 column-major. Padding positions are real recurrence steps (zero input,
but B/C/dt computed from it), exactly as in the official EfficientScan.

State-dict names follow the official checkpoints except inside the convolutional
stages, where the official model keeps a flat ``nn.Sequential``
(``layers.2.1`` .. ``layers.2.<d>`` blocks, ``layers.2.<d+2>`` downsample). Here every
stage has the same readable structure ``layers.<i>.blocks.<j>`` /
``layers.<i>.downsample``; :mod:`mmssm.converters.efficientvmamba` maps official
checkpoints (classification or detection) onto it.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmssm.registry import MODELS
from ..layers import GELU, SS2D, DropPath, PatchMerging2D, SqueezeExcite, drop_path_rates
from .base import (SSMBackbone, check_out_indices, init_linear_and_layernorm, resolve_arch,
                   run_sequential)

Tensor = torch.Tensor

# The official model builds EVSS blocks in the first two stages and inverted-residual
# blocks in all later ones.
NUM_SSM_STAGES = 2
D_STATE = 16  # the official blocks always use N = 16 (its d_state args are ignored)
STEP_SIZE = 2  # ES2D skip step


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module (keeps the official ``nn.Sequential`` indices of
    the stem and of the "v2" downsample, so their checkpoint keys load unchanged)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f'dims={self.dims}'


class BiAttn(nn.Module):
    """EfficientVMamba's channel gate (``se`` in the checkpoints), channels-last.

    ``gate = sigmoid(channel_select(gelu(global_reduce(mean_hw(norm(x))))))`` and the
    output is ``x * gate``: the LayerNorm only feeds the gate, the raw input is scaled.

    Args:
        channels (int): C.
        act_ratio (float): hidden width ``int(C * act_ratio)``.

    Shapes: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, channels: int, act_ratio: float = 0.125):
        super().__init__()
        hidden = int(channels * act_ratio)
        self.norm = nn.LayerNorm(channels)
        self.global_reduce = nn.Linear(channels, hidden)
        self.act = GELU()
        self.channel_select = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.norm(x).mean((1, 2), keepdim=True)
        gate = self.channel_select(self.act(self.global_reduce(gate)))
        return x * torch.sigmoid(gate)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, channels-last (only built when ``mlp_ratio > 0``)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EVSSBlock(nn.Module):
    """Efficient visual state-space block, channels-last.

    ``x + DropPath(se(ES2D(norm(x))) + se(conv_branch(norm(x))))``: a global branch (the
    atrous selective scan) and a local branch (depthwise 3x3 conv -> BN -> GELU ->
    1x1 conv), each scaled by the same :class:`BiAttn` module with its own gate.
    With ``mlp_ratio > 0`` an FFN residual (``norm2``, ``mlp``) follows (no released
    model has one).

    Args:
        channels (int): C.
        ssm_ratio (float): d_inner = int(ssm_ratio * C) channels are scanned.
        mlp_ratio (float): FFN hidden width ratio; 0 disables the FFN.
        drop_path (float): stochastic depth rate of both residuals.

    Shapes: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, channels: int, ssm_ratio: float = 2.0, mlp_ratio: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.op = SS2D(channels, int(ssm_ratio * channels), d_state=D_STATE,
                       dt_rank=math.ceil(channels / 16), scan='atrous', gated=True,
                       conv_bias=True)
        self.conv_branch = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.BatchNorm2d(channels),
            GELU(),
            nn.Conv2d(channels, channels, 1),
        )
        self.se = BiAttn(channels)
        self.drop_path = DropPath(drop_path)
        if mlp_ratio > 0:
            self.norm2 = nn.LayerNorm(channels)
            self.mlp = Mlp(channels, int(channels * mlp_ratio))
        else:
            self.norm2 = self.mlp = None

    def forward(self, x: Tensor) -> Tensor:
        normed = self.norm(x).permute(0, 3, 1, 2)  # both branches work on NCHW
        global_branch = self.op(normed).permute(0, 2, 3, 1)
        local_branch = self.conv_branch(normed).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.se(global_branch) + self.se(local_branch))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class InvertedResidual(nn.Module):
    """MobileNetV2-style block with SE used in the last two stages, NCHW.

    ``x + DropPath(conv_pw2(se(conv_dw(conv_pw(x)))))`` with conv_pw = 1x1 conv
    (C -> eC) + BN + ReLU, conv_dw = depthwise 3x3 + BN + ReLU, conv_pw2 = 1x1 conv
    (eC -> C) + BN. The SE width is ``max(1, int(eC * se_ratio))`` (from the expanded
    width, as in the official code).

    Args:
        channels (int): C (input = output).
        expand_ratio (int): e.
        se_ratio (float): SE reduction relative to the expanded width.
        drop_path (float): stochastic depth rate.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, expand_ratio: int = 4, se_ratio: float = 0.125,
                 drop_path: float = 0.0):
        super().__init__()
        mid = channels * expand_ratio
        self.conv_pw = nn.Sequential(
            nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.conv_dw = nn.Sequential(
            nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True))
        self.se = SqueezeExcite(mid, max(1, int(mid * se_ratio)))
        self.conv_pw2 = nn.Sequential(
            nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.conv_pw2(self.se(self.conv_dw(self.conv_pw(x)))))


def conv_downsample(in_channels: int, out_channels: int) -> nn.Sequential:
    """The official ``downsample_version='v2'``: 2x2/2 conv + LayerNorm, channels-last
    (indices 1 and 3 carry the weights, as in the official checkpoints). Odd sizes are
    floored by the convolution."""
    return nn.Sequential(Permute(0, 3, 1, 2), nn.Conv2d(in_channels, out_channels, 2, 2),
                         Permute(0, 2, 3, 1), nn.LayerNorm(out_channels))


class EfficientVMambaStage(nn.Module):
    """``blocks`` then ``downsample``; returns both the stage output (for outnorm) and
    the downsampled map (input of the next stage), channels-last.

    Args:
        blocks (list[nn.Module]): EVSS blocks (channels-last) or inverted residuals
            (NCHW; set ``channels_first``).
        downsample (nn.Module): PatchMerging2D, the "v2" conv downsample or Identity.
        channels_first (bool): the blocks work on NCHW maps.
        with_cp (bool): gradient checkpointing per block (the official model does it
            for EVSS blocks only).
    """

    def __init__(self, blocks: List[nn.Module], downsample: nn.Module,
                 channels_first: bool = False, with_cp: bool = False):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample
        self.channels_first = channels_first
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        if self.channels_first:
            x = x.permute(0, 3, 1, 2)
            x = run_sequential(self.blocks, x, False).permute(0, 2, 3, 1)
        else:
            x = run_sequential(self.blocks, x, self.with_cp)
        return x, self.downsample(x)


@MODELS.register_module()
class EfficientVMamba(SSMBackbone):
    """EfficientVMamba backbone (ES2D atrous-scan EVSS stages + inverted-residual
    stages), with the official detection/segmentation wrapper's outputs.

    Presets follow the released ImageNet checkpoints (the repository's yaml/paper list
    S with width 96; the trained S model has width 64):

    ======  ==================  ============  ======================================
    arch    dims                depths        backbone params (4 out-norms)
    ======  ==================  ============  ======================================
    tiny    48, 96, 192, 384    2, 2, 4, 2    6,109,332
    small   64, 128, 256, 512   2, 2, 4, 2    10,761,584
    base    96, 192, 384, 768   2, 2, 9, 2    32,949,480
    ======  ==================  ============  ======================================

    Args:
        arch (str | dict): preset name or a dict with keys ``dims`` (int: C0, widths
            doubling per stage; or one width per stage) and ``depths`` (blocks per
            stage; the first two stages are EVSS stages, the rest inverted-residual
            stages), and optionally ``ssm_ratio`` (2.0, must be in (0, 2]),
            ``mlp_ratio`` (0.0; > 0 adds an FFN to every EVSS block), ``patch_size``
            (4), ``patch_norm`` (True) and ``downsample_version`` ('v1' =
            PatchMerging2D, 'v2' = 2x2/2 conv + LayerNorm).
        in_channels (int): input channels.
        out_indices (Sequence[int]): stages whose (pre-downsample) outputs are returned,
            each through its own LayerNorm ``outnorm{i}`` (at least one; the official
            wrapper's empty selection is not supported).
        drop_path_rate (float): stochastic depth, linear over all blocks. The default
            0.2 is the value the official detection configs train with.
        frozen_stages (int): freeze the stem and the first ``frozen_stages`` stages
            (with their downsample and out-norm); -1 freezes nothing, 0 the stem
            (mmdet's ResNet / Swin semantics).
        norm_eval (bool): keep BatchNorms (conv branches, inverted residuals) in eval
            mode during training.
        with_cp (bool): gradient checkpointing of the EVSS blocks.
        pretrained (str, optional): deprecated, as in mmseg: a checkpoint path that
            becomes ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)`` (mmseg
            segmentors pass their ``pretrained`` here).
        init_cfg (dict | list, optional): e.g. ``dict(type='Pretrained',
            checkpoint=...)`` with an official or mmssm checkpoint.

    Shapes:
        input (B, in_channels, H, W), H and W >= patch_size (any size; odd sizes are
        zero-padded inside ES2D and PatchMerging). Output: tuple of (B, C_i,
        H_i, W_i) with H_0 = floor(H / patch_size), H_{i+1} = ceil(H_i / 2) ('v1').
    """
    family = 'efficientvmamba'
    arch_settings: Dict[str, Dict] = {
        'tiny': dict(dims=48, depths=(2, 2, 4, 2)),
        'small': dict(dims=64, depths=(2, 2, 4, 2)),
        'base': dict(dims=96, depths=(2, 2, 9, 2)),
    }
    _optional_arch = dict(ssm_ratio=2.0, mlp_ratio=0.0, patch_size=4, patch_norm=True,
                          downsample_version='v1')

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.2,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval,
                         pretrained=pretrained, init_cfg=init_cfg)
        owner = type(self).__name__
        settings = resolve_arch(arch, self.arch_settings, ('dims', 'depths'), owner,
                                self._optional_arch)
        settings = {**self._optional_arch, **settings}
        depths, dims = self._check_settings(settings, owner)
        num_stages = len(depths)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'{owner}: drop_path_rate must be in [0, 1), got {drop_path_rate}')
        if in_channels < 1:
            raise ValueError(f'{owner}: in_channels must be >= 1, got {in_channels}')
        self.arch = settings
        self.dims = dims
        self.depths = depths
        self.num_stages = num_stages
        self.in_channels = in_channels
        self.patch_size = settings['patch_size']
        self.out_indices = check_out_indices(out_indices, num_stages, owner)
        order = sorted(set(self.out_indices))  # forward returns them in stage order
        self._set_outputs([dims[i] for i in order], [self.patch_size * 2**i for i in order])
        self.with_cp = with_cp

        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], self.patch_size, stride=self.patch_size),
            Permute(0, 2, 3, 1),
            nn.LayerNorm(dims[0]) if settings['patch_norm'] else nn.Identity(),
        )
        rates = drop_path_rates(drop_path_rate, depths)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            stage_rates = rates[sum(depths[:i]):sum(depths[:i + 1])]
            if i < NUM_SSM_STAGES:
                blocks = [EVSSBlock(dims[i], settings['ssm_ratio'], settings['mlp_ratio'], r)
                          for r in stage_rates]
            else:
                blocks = [InvertedResidual(dims[i], drop_path=r) for r in stage_rates]
            if i == num_stages - 1:
                downsample = nn.Identity()
            elif settings['downsample_version'] == 'v2':
                downsample = conv_downsample(dims[i], dims[i + 1])
            else:
                downsample = PatchMerging2D(dims[i], dims[i + 1])
            self.layers.append(EfficientVMambaStage(
                blocks, downsample, channels_first=i >= NUM_SSM_STAGES, with_cp=with_cp))
        for i in sorted(set(self.out_indices)):
            self.add_module(f'outnorm{i}', nn.LayerNorm(dims[i]))

        self.apply(init_linear_and_layernorm)
        self._freeze_stages()

    @staticmethod
    def _check_settings(settings: dict, owner: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        depths = settings['depths']
        if (not isinstance(depths, Sequence) or len(depths) == 0
                or any(not isinstance(d, int) or d < 0 for d in depths)):
            raise ValueError(f'{owner}: arch depths must be a non-empty sequence of ints '
                             f'>= 0, got {depths!r}')
        depths = tuple(depths)
        dims = settings['dims']
        if isinstance(dims, int):
            dims = tuple(dims * 2**i for i in range(len(depths)))
        elif isinstance(dims, Sequence) and len(dims) == len(depths):
            dims = tuple(dims)
        else:
            raise ValueError(f'{owner}: arch dims must be an int or one width per stage '
                             f'({len(depths)} stages), got {dims!r}')
        if any(not isinstance(c, int) or c < 1 for c in dims):
            raise ValueError(f'{owner}: arch dims must be positive ints, got {dims!r}')
        ssm_ratio = settings['ssm_ratio']
        if not 0 < ssm_ratio <= 2.0 or int(ssm_ratio * dims[0]) < 1:
            # ssm_ratio > 2 switches the official SS2D to a low-rank variant
            # (in_rank/out_rank projections) that no released model uses.
            raise ValueError(f'{owner}: arch ssm_ratio must be in (0, 2] and give at '
                             f'least one scanned channel, got {ssm_ratio}')
        if settings['mlp_ratio'] < 0:
            raise ValueError(f'{owner}: arch mlp_ratio must be >= 0, got '
                             f'{settings["mlp_ratio"]}')
        if not isinstance(settings['patch_size'], int) or settings['patch_size'] < 1:
            raise ValueError(f'{owner}: arch patch_size must be a positive int, got '
                             f'{settings["patch_size"]!r}')
        if settings['downsample_version'] not in ('v1', 'v2'):
            raise ValueError(f"{owner}: arch downsample_version must be 'v1' "
                             f"(PatchMerging2D) or 'v2' (conv), got "
                             f'{settings["downsample_version"]!r}')
        return depths, dims

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, in_channels, H, W) -> tuple of NCHW maps for ``out_indices``."""
        if (not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels
                or x.shape[2] < self.patch_size or x.shape[3] < self.patch_size):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'{type(self).__name__}: expected input (B, {self.in_channels}, '
                             f'H, W) with H, W >= {self.patch_size}, got {got}')
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            if i in self.out_indices:
                out = getattr(self, f'outnorm{i}')(out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
