"""ToyMamba: a two-stage SS2D backbone, the smallest real member of a family."""
from typing import Any, Mapping, Optional, Sequence, Union

import torch.nn as nn

from mmssm.models.backbones.base import (SSMBackbone, check_out_indices, resolve_arch,
                                         run_sequential)
from mmssm.models.layers import SS2D, LayerNorm2d
from mmssm.registry import MODELS


class ToyBlock(nn.Module):
    """``x + SS2D(norm(x))`` on (B, C, H, W)."""

    def __init__(self, dim: int, d_state: int):
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, dim, d_state=d_state, dt_rank=2, scan='cross')

    def forward(self, x):
        return x + self.op(self.norm(x))


@MODELS.register_module()
class ToyMamba(SSMBackbone):
    """Stem (stride-4 conv), then one stage per width: a stride-2 conv (not in stage 0)
    and ``depth`` :class:`ToyBlock` s. Returns the stage maps of ``out_indices``."""
    family = 'toymamba'
    arch_settings = {'nano': dict(dims=(8, 16), depths=(1, 1), d_state=2)}

    def __init__(self, arch: Union[str, Mapping[str, Any]] = 'nano', in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1), frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval,
                         pretrained=pretrained, init_cfg=init_cfg)
        settings = resolve_arch(arch, self.arch_settings, ('dims', 'depths', 'd_state'),
                                'ToyMamba')
        dims = settings['dims']
        self.out_indices = check_out_indices(out_indices, len(dims), 'ToyMamba')
        self.num_stages = len(dims)
        order = sorted(set(self.out_indices))
        self._set_outputs([dims[i] for i in order], [4 * 2**i for i in order])
        self.with_cp = with_cp
        self.stem = nn.Conv2d(in_channels, dims[0], 4, stride=4)
        self.stages = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, settings['depths'])):
            down = [nn.Conv2d(dims[i - 1], dim, 2, stride=2)] if i else []
            self.stages.append(nn.Sequential(
                *down, *[ToyBlock(dim, settings['d_state']) for _ in range(depth)]))
        self._freeze_stages()

    def stem_modules(self):
        return [self.stem]

    def stage_modules(self, index):
        return [self.stages[index]]

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = run_sequential(stage, x, self.with_cp)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
