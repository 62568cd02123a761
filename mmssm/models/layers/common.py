"""Small building blocks shared by several backbone families."""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmssm.ops.activation import gelu, gelu_
from mmssm.ops.linear import activate, linear
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


def updates_in_place(*inputs: Union[Tensor, nn.Module]) -> bool:
    """Whether a module may overwrite the fresh intermediate results it computes from
    ``inputs`` (tensors, or modules standing for their parameters) with ``relu_``,
    ``add_``, ... instead of allocating new ones: true when no autograd graph is built
    through them (no grad mode, or nothing in ``inputs`` needs a gradient) and no trace
    or export records the ops. An in-place update saves a buffer and a pass over memory
    per op; callers never apply one to a module's input or to a parameter."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return False
    if not torch.is_grad_enabled():
        return True
    for item in inputs:
        tensors = item.parameters() if isinstance(item, nn.Module) else (item, )
        if any(t.requires_grad for t in tensors):
            return False
    return True


class GELU(nn.GELU):
    """``nn.GELU`` (same attributes, no parameters) computed by
    :func:`mmssm.ops.activation.gelu` when exact (``approximate='none'``): the CPU
    kernel, forward and backward, where it applies. :meth:`forward_` overwrites its
    input (for callers that own it, with no autograd graph through it)."""

    def forward(self, x: Tensor) -> Tensor:
        return gelu(x) if self.approximate == 'none' else super().forward(x)

    def forward_(self, x: Tensor) -> Tensor:
        if self.approximate == 'none':
            return gelu_(x)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)


def fusable_activation(module: nn.Module) -> Optional[str]:
    """The :func:`mmssm.ops.linear.linear` activation name that computes ``module``
    (``'gelu'`` for an exact ``nn.GELU``, ``'silu'``, ``'relu'``), or None if it has none."""
    if type(module) in (nn.GELU, GELU) and module.approximate == 'none':
        return 'gelu'
    return {nn.SiLU: 'silu', nn.ReLU: 'relu'}.get(type(module))


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, keys and initialisation) computed by
    :func:`mmssm.ops.linear.linear`: oneDNN's linear on CPU float32 inference.

    ``forward(x, activation=None)`` may fuse an activation (an
    :func:`mmssm.ops.linear.linear` name) into the product.
    """

    def forward(self, x: Tensor, activation: Optional[str] = None) -> Tensor:
        return linear(x, self.weight, self.bias, activation)


class Linear2d(Linear):
    """A linear layer over the channels of an NCHW map (a 1x1 convolution) whose
    weight keeps the ``nn.Linear`` (out, in) shape, so checkpoints of either layout
    load unchanged.

    The output keeps the input's memory layout without a copy: a channels-last map (what
    :class:`LayerNorm2d` returns) is multiplied as the (B, H, W, C) matrix it is stored
    as (:class:`Linear`), a contiguous one goes through a 1x1 convolution.
    ``forward(x, activation=None)`` applies an activation of
    :func:`mmssm.ops.linear.linear` after the product (fused into it where that is);
    :meth:`forward_parts` computes the output's channel groups as separate products.
    """

    def forward(self, x: Tensor, activation: Optional[str] = None) -> Tensor:
        return self._product(x, self.weight, self.bias, activation)

    def forward_parts(self, x: Tensor, sizes: Sequence[int],
                      activations: Optional[Sequence[Optional[str]]] = None
                      ) -> Tuple[Tensor, ...]:
        """``forward(x).split(sizes, dim=1)``, part i activated by ``activations[i]``, as
        one product per part (rows of the weight): each part comes out with the input's
        layout and no gaps (the parts of one product are strided views, which a later
        elementwise op reads slowly), and its activation fuses into its product."""
        activations = (None, ) * len(sizes) if activations is None else tuple(activations)
        if sum(sizes) != self.out_features or len(activations) != len(sizes):
            raise ValueError(f'{type(self).__name__}.forward_parts: sizes {tuple(sizes)} must '
                             f'sum to {self.out_features} output channels, one activation '
                             f'each, got {activations}')
        parts, start = [], 0
        for size, activation in zip(sizes, activations):
            rows = slice(start, start + size)
            bias = None if self.bias is None else self.bias[rows]
            parts.append(self._product(x, self.weight[rows], bias, activation))
            start += size
        return tuple(parts)

    @staticmethod
    def _product(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                 activation: Optional[str]) -> Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
                memory_format=torch.channels_last):
            return linear(x.permute(0, 2, 3, 1), weight, bias, activation).permute(0, 3, 1, 2)
        out = F.conv2d(x, weight[:, :, None, None], bias)
        return activate(out, activation)


class ChannelScaleConv(nn.Conv2d):
    """A depthwise 1x1 convolution -- a per-channel scale (and bias) -- computed as the
    product it is. Same parameters and keys as ``nn.Conv2d(C, C, 1, groups=C)``
    (``weight`` (C, 1, 1, 1), ``bias`` (C,)). (On CPU torch runs small-batch grouped 1x1
    convolutions one group at a time: 2 x 134 convolutions of one channel per block in
    MobileMamba-B1.)"""

    def __init__(self, channels: int, bias: bool = True):
        super().__init__(channels, channels, 1, groups=channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.out_channels:
            raise ValueError(f'ChannelScaleConv expects (B, {self.out_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        weight = self.weight.view(1, -1, 1, 1)
        if self.bias is None:
            return x * weight
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, weight)


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
        self.reduction = Linear(4 * in_channels, out_channels, bias=False)
        self.norm = nn.LayerNorm(4 * in_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f'PatchMerging2D expects (B, H, W, {self.in_channels}), '
                             f'got {tuple(x.shape)}')
        x = pad_to_multiple(x, 2, dims=(1, 2))  # odd maps: zero row/column at the end
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                       x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SqueezeExcite(nn.Module):
    """Channel gate on an NCHW map: ``x * sigmoid(conv_expand(act(conv_reduce(mean_hw(x)))))``
    with 1x1 convolutions (EfficientVMamba's inverted residual, MobileMamba's blocks and
    MSVMamba's blocks; the converters map the official names onto these).

    Args:
        channels (int): C.
        hidden (int): channels of the squeezed vector.
        bias (bool): biases of the two convolutions.

    Keys: ``conv_reduce.weight`` (hidden, C, 1, 1), ``conv_expand.weight``
    (C, hidden, 1, 1) (+ ``.bias`` with ``bias``).
    """

    def __init__(self, channels: int, hidden: int, bias: bool = True):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)

    def gate(self, x: Tensor) -> Tensor:
        """sigmoid(conv_expand(act(conv_reduce(mean_hw(x))))): (B, C, H, W) -> (B, C, 1, 1).

        The 1x1 convolutions of the squeezed (B, C) vector are the linear maps they are
        (:func:`mmssm.ops.linear.linear`; torch runs a 1x1 convolution of a 1x1 map
        through its slow reference path on CPU)."""
        hidden = linear(x.mean((2, 3)), self.conv_reduce.weight.flatten(1),
                        self.conv_reduce.bias)
        gate = linear(self.act(hidden), self.conv_expand.weight.flatten(1),
                      self.conv_expand.bias)
        return torch.sigmoid(gate)[:, :, None, None]


PYRAMID_SCALES = (4.0, 2.0, 1.0, 0.5, 0.25)


def pyramid_resample(scale: float, channels: int,
                     norm: Optional[Callable[[int], nn.Module]] = None,
                     halve_channels: bool = True) -> Tuple[nn.Sequential, int]:
    """One level of a simple feature pyramid (ViTDet): resample a (B, C, H, W) map by
    ``scale``.

    4: 2x2 stride-2 deconv, ``norm``, GELU, 2x2 stride-2 deconv; 2: one deconv; 1: no
    layer; 1/2, 1/4: max-pooling. With ``halve_channels`` each deconv halves the channels
    (ViTDet, :class:`~mmssm.models.necks.SimpleFPN`), otherwise they are kept (Vim's
    official segmentation adapters). Returns ``(nn.Sequential(layers), out_channels)``;
    the layer indices are those of the official modules (``0`` deconv, ``1`` norm, ``3``
    deconv).
    """
    scale = float(scale)
    if scale not in PYRAMID_SCALES:
        raise ValueError(f'pyramid scale must be one of {PYRAMID_SCALES}, got {scale}')
    layers: List[nn.Module] = []
    dim = channels

    def deconv(cin: int) -> nn.Module:
        return nn.ConvTranspose2d(cin, cin // 2 if halve_channels else cin, 2, stride=2)

    if scale == 4.0:
        layers.append(deconv(dim))
        dim = layers[-1].out_channels
        if norm is not None:
            layers.append(norm(dim))
        layers += [GELU(), deconv(dim)]
        dim = layers[-1].out_channels
    elif scale == 2.0:
        layers.append(deconv(dim))
        dim = layers[-1].out_channels
    elif scale < 1.0:
        kernel = int(round(1 / scale))
        layers.append(nn.MaxPool2d(kernel_size=kernel, stride=kernel))
    return nn.Sequential(*layers), dim
