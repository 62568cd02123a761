"""Small building blocks shared by several backbone families."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmssm.ops.scan_lowering import pad_to_multiple

Tensor = torch.Tensor


class DropPath(nn.Module):
    """Per-sample stochastic depth: zero a sample's residual branch with probability
    ``drop_prob`` in training and rescale the kept ones by ``1 / (1 - drop_prob)``."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f'DropPath: drop_prob must be in [0, 1), got {drop_prob}')
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def drop_path_rates(drop_path_rate: float, depths) -> list:
    """Linearly increasing stochastic-depth rates, one per block, in block order."""
    total = int(sum(depths))
    if total == 0:
        return []
    # Plain CPU numbers even under a meta/cuda default device (e.g. meta builds).
    return torch.linspace(0, drop_path_rate, total, device='cpu').tolist()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor (same parameters as
    ``nn.LayerNorm(C)``)."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Linear2d(nn.Linear):
    """A linear layer over the channels of an NCHW map (a 1x1 convolution) whose
    weight keeps the ``nn.Linear`` (out, in) shape, so checkpoints of either layout
    load unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class PatchMerging2D(nn.Module):
    """2x downsampling by concatenating the four 2x2 phases (Swin-style), channels-last.

    Input (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_channels). Odd sizes are
    zero-padded at the bottom/right first. Phase order on the channel axis:
    (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col);
    then ``norm`` (LayerNorm 4C) and ``reduction`` (Linear 4C -> out, no bias).
    """

    def __init__(self, in_channels: int, out_channels: Optional[int] = None,
                 eps: float = 1e-5):
        super().__init__()
        out_channels = 2 * in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)
        self.norm = nn.LayerNorm(4 * in_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f'PatchMerging2D expects (B, H, W, {self.in_channels}), '
                             f'got {tuple(x.shape)}')
        x = pad_to_multiple(x, 2, dims=(1, 2))  # odd maps: zero row/column at the end
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                       x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))
