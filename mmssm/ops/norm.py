"""``rms_norm``: RMSNorm over the last axis (Vim's norm), computed in float32.

    rms_norm(x, weight, eps) == x * rsqrt(mean(x ** 2, -1) + eps) * weight

Two implementations of this one function:

* **composite** (any device and dtype, autograd, tracing, ONNX export): the formula above
  as torch ops, in float32 for reduced-precision inputs (float64 stays float64);
* **fused** (CPU, float32, no autograd graph to build: inference): ``mmssm._C.rms_norm``,
  one pass over each row in cache instead of five whole-tensor passes -- at Vim-Ti's
  (197, 192) tokens the kernel takes about 13 us against the composite's 50-100 us on
  one core of an AVX2 EPYC VM; Vim-Ti's forward at 224 is 1-2 % faster
  (docs/benchmarks.md). Its sum of squares is formed in another order, so results
  equal the composite's up to rounding.

The fused path follows the selective-scan backend choice (``backend`` /
:func:`~mmssm.ops.scan_backend` / ``MMSSM_SCAN_BACKEND``): ``'torch'`` keeps the
composite, as do autocast, JIT traces (FLOP counting) and ONNX export.
"""
from typing import Optional

import torch

from .selective_scan import fused_inference_applies

Tensor = torch.Tensor


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5, *,
             backend: Optional[str] = None) -> Tensor:
    """RMSNorm of ``x`` over its last axis, scaled by ``weight``.

    Args:
        x: (..., C), any strides.
        weight: (C,).
        eps: added to the mean square (finite, >= 0).
        backend: selective-scan backend name or None (see the module docstring).

    Returns:
        (..., C) in float32 for float16 / bfloat16 / float32 inputs, float64 for
        float64 ones (cast it to the dtype the caller wants).
    """
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f'rms_norm: x must be a (..., C) tensor with C >= 1, got '
                         f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
    if not isinstance(weight, Tensor) or tuple(weight.shape) != (x.shape[-1], ):
        raise ValueError(f'rms_norm: weight must be ({x.shape[-1]},) like the last axis of '
                         f'x {tuple(x.shape)}, got '
                         f'{tuple(weight.shape) if isinstance(weight, Tensor) else weight!r}')
    eps = float(eps)
    if not (eps >= 0.0 and eps != float('inf')):
        raise ValueError(f'rms_norm: eps must be finite and >= 0, got {eps}')
    if weight.device != x.device:
        raise ValueError(f'rms_norm: weight is on {weight.device} but x is on {x.device}')
    if fused_inference_applies((x, weight), backend, 'rms_norm'):
        from .kernels import load_backend
        return load_backend('cpu').rms_norm(x, weight, eps)
    x32 = x if x.dtype == torch.float64 else x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return y * weight.to(x32.dtype)
