"""EfficientViTFPN: an FPN that also grows finer levels with transposed convolutions.

MobileMamba's (and EfficientViT's) detection configs use it because those backbones
start at stride 16: Mask R-CNN needs strides 4 and 8, RetinaNet stride 8. Behaviour and
parameter names follow the official neck (``downstream/det/backbones/efficientvit_fpn.py``
in MobileMamba, from EfficientViT), so official detector checkpoints load unchanged:

* ``lateral_convs[i]``: 1x1 conv on backbone level ``start_level + i``;
  top-down pathway: each lateral += nearest-upsampled coarser lateral;
* ``extra_trans_convs[t]``: 2x2 stride-2 transposed conv, applied in turn starting from
  the finest (fused) lateral: level ``t`` doubles the resolution of level ``t - 1``;
* ``fpn_convs[i]``: 3x3 conv per backbone level, then extra coarse levels
  (``add_extra_convs``: stride-2 3x3 convs on the input / lateral / output; otherwise
  stride-2 subsampling of the last output);
* ``extra_fpn_convs[j]``: 3x3 conv on the ``j``-th transposed level counted from the
  finest.

Output order: transposed-conv levels (finest first), backbone levels, coarse extras.
Convolutions have a bias and no norm/activation unless ``norm_cfg``/``act_cfg`` say
otherwise (mmcv ``ConvModule`` naming: ``conv``, ``bn``/``gn``, ``activate``).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmssm.registry import MODELS

Tensor = torch.Tensor

_NORMS = {'BN': ('bn', nn.BatchNorm2d), 'BN2d': ('bn', nn.BatchNorm2d),
          'SyncBN': ('bn', nn.SyncBatchNorm), 'GN': ('gn', nn.GroupNorm)}
_ACTS = {'ReLU': nn.ReLU, 'ReLU6': nn.ReLU6, 'LeakyReLU': nn.LeakyReLU, 'GELU': nn.GELU,
         'SiLU': nn.SiLU, 'Swish': nn.SiLU}


class ConvNormAct(nn.Module):
    """Conv (or transposed conv) -> optional norm -> optional activation, with mmcv
    ``ConvModule`` parameter names. The conv has a bias iff there is no norm.

    Args:
        norm_cfg (dict, optional): ``type`` in BN/BN2d/SyncBN/GN plus the layer's
            kwargs (GN needs ``num_groups``).
        act_cfg (dict, optional): ``type`` in ReLU/ReLU6/LeakyReLU/GELU/SiLU/Swish plus
            kwargs.
        transposed (bool): use ``nn.ConvTranspose2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None, transposed: bool = False):
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, bias=norm_cfg is None)
        self.norm_name = None
        if norm_cfg is not None:
            cfg = dict(norm_cfg)
            kind = cfg.pop('type', None)
            cfg.pop('requires_grad', None)
            if kind not in _NORMS:
                raise ValueError(f'EfficientViTFPN: norm_cfg type {kind!r} is not supported; '
                                 f'choose from {sorted(_NORMS)} or None')
            self.norm_name, layer = _NORMS[kind]
            norm = (layer(num_channels=out_channels, **cfg) if kind == 'GN'
                    else layer(out_channels, **cfg))
            self.add_module(self.norm_name, norm)
            requires_grad = dict(norm_cfg).get('requires_grad', True)
            for param in norm.parameters():
                param.requires_grad = requires_grad
        self.activate = None
        if act_cfg is not None:
            cfg = dict(act_cfg)
            kind = cfg.pop('type', None)
            if kind not in _ACTS:
                raise ValueError(f'EfficientViTFPN: act_cfg type {kind!r} is not supported; '
                                 f'choose from {sorted(_ACTS)} or None')
            self.activate = _ACTS[kind](**cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


@MODELS.register_module()
class EfficientViTFPN(BaseModule):
    """FPN with ``num_extra_trans_convs`` transposed-conv levels finer than the inputs.

    Args:
        in_channels (list[int]): channels of each backbone level (finest first).
        out_channels (int): channels of every output.
        num_outs (int): number of outputs = transposed levels + used backbone levels
            + coarse extra levels.
        start_level (int): first backbone level used.
        end_level (int): end (exclusive) of the used backbone levels; -1 = all. With
            an explicit end no coarse extra level is allowed.
        add_extra_convs (bool | str): coarse extras by stride-2 3x3 convs on
            ``'on_input'`` (last used backbone map; ``True`` means this),
            ``'on_lateral'`` or ``'on_output'``; False = stride-2 subsampling.
        relu_before_extra_convs (bool): ReLU before the 2nd and later coarse convs.
        no_norm_on_lateral (bool): no norm in lateral and transposed convs.
        num_extra_trans_convs (int): transposed-conv levels (each halves the stride).
        conv_cfg (dict, optional): only None / ``dict(type='Conv2d')`` is supported.
        norm_cfg, act_cfg (dict, optional): see :class:`ConvNormAct`.
        upsample_cfg (dict): ``F.interpolate`` kwargs of the top-down pathway
            (to the finer map's size unless ``scale_factor`` is given).
        init_cfg: default Xavier-uniform convs and Kaiming (fan-out) transposed convs,
            as the official neck initialises them.

    Input: a sequence of ``len(in_channels)`` maps (B, in_channels[i], H_i, W_i).
    Output: a tuple of ``num_outs`` maps (B, out_channels, ., .), finest first.
    """

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False,
                 num_extra_trans_convs: int = 0,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 upsample_cfg: dict = dict(mode='nearest'),
                 init_cfg: Union[dict, List[dict], None] = [
                     dict(type='Xavier', layer='Conv2d', distribution='uniform'),
                     dict(type='Kaiming', layer='ConvTranspose2d', mode='fan_out',
                          nonlinearity='relu', distribution='normal')
                 ]):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, (list, tuple)) or not in_channels:
            raise ValueError(f'EfficientViTFPN: in_channels must be a non-empty list, got '
                             f'{in_channels!r}')
        if conv_cfg is not None and dict(conv_cfg).get('type') not in ('Conv2d', 'Conv'):
            raise NotImplementedError(f'EfficientViTFPN: conv_cfg {conv_cfg!r} is not '
                                      "supported (only None or dict(type='Conv2d'))")
        if num_extra_trans_convs < 0:
            raise ValueError(f'EfficientViTFPN: num_extra_trans_convs must be >= 0, got '
                             f'{num_extra_trans_convs}')
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.num_extra_trans_convs = num_extra_trans_convs
        self.upsample_cfg = dict(upsample_cfg)
        if not 0 <= start_level < self.num_ins:
            raise ValueError(f'EfficientViTFPN: start_level {start_level} out of range for '
                             f'{self.num_ins} inputs')
        self.start_level = start_level
        self.backbone_end_level = self.num_ins if end_level == -1 else end_level
        if not start_level < self.backbone_end_level <= self.num_ins:
            raise ValueError(f'EfficientViTFPN: end_level {end_level} must be -1 or in '
                             f'({start_level}, {self.num_ins}]')
        used = self.backbone_end_level - start_level
        self.num_coarse_extras = num_outs - used - num_extra_trans_convs
        if self.num_coarse_extras < 0 or (end_level != -1 and self.num_coarse_extras):
            raise ValueError(
                f'EfficientViTFPN: num_outs={num_outs} must be {used} backbone levels + '
                f'{num_extra_trans_convs} transposed levels'
                + (' (no coarse extras with an explicit end_level)' if end_level != -1
                   else ' + any number of coarse extra levels'))
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False, 'on_input', 'on_lateral', 'on_output'):
            raise ValueError(f'EfficientViTFPN: add_extra_convs must be a bool or one of '
                             f"'on_input', 'on_lateral', 'on_output'; got {add_extra_convs!r}")
        self.add_extra_convs = add_extra_convs

        lateral_norm = None if no_norm_on_lateral else norm_cfg
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, self.backbone_end_level):
            self.lateral_convs.append(
                ConvNormAct(self.in_channels[i], out_channels, 1, norm_cfg=lateral_norm,
                            act_cfg=act_cfg))
            self.fpn_convs.append(
                ConvNormAct(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                            act_cfg=act_cfg))
        if add_extra_convs:
            for i in range(self.num_coarse_extras):
                source_channels = (self.in_channels[self.backbone_end_level - 1]
                                   if i == 0 and add_extra_convs == 'on_input' else out_channels)
                self.fpn_convs.append(
                    ConvNormAct(source_channels, out_channels, 3, stride=2, padding=1,
                                norm_cfg=norm_cfg, act_cfg=act_cfg))
        self.extra_trans_convs = nn.ModuleList()
        self.extra_fpn_convs = nn.ModuleList()
        for _ in range(num_extra_trans_convs):
            self.extra_trans_convs.append(
                ConvNormAct(out_channels, out_channels, 2, stride=2, norm_cfg=lateral_norm,
                            act_cfg=act_cfg, transposed=True))
            self.extra_fpn_convs.append(
                ConvNormAct(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                            act_cfg=act_cfg))

    def _check_inputs(self, inputs: Sequence[Tensor]) -> None:
        if len(inputs) != self.num_ins:
            raise ValueError(f'EfficientViTFPN expects {self.num_ins} input maps, got '
                             f'{len(inputs)}')
        for i, (x, channels) in enumerate(zip(inputs, self.in_channels)):
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f'EfficientViTFPN: input {i} must be (B, {channels}, H, W), '
                                 f'got {tuple(x.shape)}')

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        self._check_inputs(inputs)
        laterals = [conv(inputs[self.start_level + i])
                    for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                   **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up

        finer = []  # transposed-conv levels, finest first
        current = laterals[0]
        for trans_conv in self.extra_trans_convs:
            current = trans_conv(current)
            finer.insert(0, current)

        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)]
        used = len(laterals)
        if self.num_coarse_extras:
            if not self.add_extra_convs:
                for _ in range(self.num_coarse_extras):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {'on_input': inputs[self.backbone_end_level - 1],
                          'on_lateral': laterals[-1],
                          'on_output': outs[-1]}[self.add_extra_convs]
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, used + self.num_coarse_extras):
                    previous = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](previous))
        finer_outs = [conv(level) for conv, level in zip(self.extra_fpn_convs, finer)]
        return tuple(finer_outs + outs)
