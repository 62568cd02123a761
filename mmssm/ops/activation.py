"""``gelu``: the exact (erf) GELU of ``nn.GELU()``, ``x * Phi(x)``.

Two implementations of this one function:

* **composite** (any device and dtype, tracing, ONNX export, autocast): ``F.gelu``;
* **CPU kernel** (CPU float32, forward and backward): ``mmssm._C.gelu`` /
  ``gelu_backward`` (csrc/selective_scan/activation.h: a division, one exp and a
  polynomial per value, four vectors at a time). On one core of an AVX2 EPYC VM it takes
  0.7-0.9 ns per value forward and 0.8-1.0 backward against torch's 1.0-1.3 and 2.0
  (docs/benchmarks.md). Results equal ``F.gelu``'s up to rounding (both are within
  about 2e-7 * max(1, |x|) of the float64 function; tests/ops/test_activation.py).

The kernel follows the selective-scan backend choice (``backend`` /
:func:`~mmssm.ops.scan_backend` / ``MMSSM_SCAN_BACKEND``): ``'torch'`` keeps ``F.gelu``,
as do autocast, JIT traces (FLOP counting) and ONNX export. Its gradient is not
differentiable again (``backward(create_graph=True)`` and a second differentiation raise).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .selective_scan import builds_graph, cpu_kernel_applies

Tensor = torch.Tensor


class GeluFn(torch.autograd.Function):
    """``gelu`` on the CPU kernel, differentiable once."""

    @staticmethod
    def forward(ctx, x):
        from .kernels import load_backend
        ctx.save_for_backward(x)
        return load_backend('cpu').gelu(x)

    @staticmethod
    def backward(ctx, grad):
        from .kernels import _differentiable_once, load_backend
        x, = ctx.saved_tensors
        dx = load_backend('cpu').gelu_backward(grad.to(x.dtype), x)
        return _differentiable_once('cpu', [dx], (grad, x), op='gelu')[0]


def _kernel_applies(x: Tensor, backend: Optional[str]) -> bool:
    return (isinstance(x, Tensor) and x.dtype == torch.float32
            and cpu_kernel_applies(x.device, backend, 'gelu'))


def gelu(x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """``F.gelu(x)`` (exact), on the CPU kernel where it applies (module docstring).

    Args:
        x: any shape and strides.
        backend: selective-scan backend name or None.

    Returns:
        A new tensor of x's shape (and, on the kernel, x's strides where its values are
        dense in memory).
    """
    if not _kernel_applies(x, backend):
        return F.gelu(x)
    if builds_graph((x, )):
        return GeluFn.apply(x)
    from .kernels import load_backend
    return load_backend('cpu').gelu(x)


def gelu_(x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """``gelu`` written over ``x`` (returned); ``torch.ops.aten.gelu_`` where the kernel
    does not apply, where x is part of an autograd graph, or where x is neither
    contiguous nor a channels-last map."""
    dense = x.is_contiguous() or (x.dim() == 4
                                  and x.is_contiguous(memory_format=torch.channels_last))
    if _kernel_applies(x, backend) and dense and not builds_graph((x, )):
        from .kernels import load_backend
        return load_backend('cpu').gelu(x, True)
    return torch.ops.aten.gelu_(x)
