"""``gelu`` and ``silu``: the exact (erf) GELU of ``nn.GELU()``, ``x * Phi(x)``, and the
SiLU of ``nn.SiLU()``, ``x * sigmoid(x)``; :func:`apply` / :func:`apply_` by name, also
for ``'relu'`` (always torch's).

Two implementations of each:

* **composite** (any device and dtype, tracing, ONNX export, autocast): ``F.gelu`` /
  ``F.silu``;
* **CPU kernel** (CPU float32, forward and backward): ``mmssm._C.activation`` /
  ``activation_backward`` (csrc/selective_scan/activation.h; four vectors at a time).
  On one core of an AVX2 EPYC VM the GELU takes 0.7-0.9 ns per value forward and
  0.8-1.05 backward against torch's 1.0-1.3 and 1.4-2.1 (docs/benchmarks.md). Results
  equal torch's up to rounding (tests/ops/test_activation.py measures both against
  float64 definitions).

The kernel follows the selective-scan backend choice (``backend`` /
:func:`~mmssm.ops.scan_backend` / ``MMSSM_SCAN_BACKEND``): ``'torch'`` keeps the
composite, as do autocast, JIT traces (FLOP counting) and ONNX export. Its gradient is
not differentiable again (a second differentiation after ``create_graph=True`` raises).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .selective_scan import builds_graph, cpu_kernel_applies

Tensor = torch.Tensor

# kind -> (composite, torch's in-place op); the CPU kernel computes KERNEL_KINDS
_COMPOSITE = {
    'gelu': (F.gelu, torch.ops.aten.gelu_),
    'silu': (F.silu, torch.ops.aten.silu_),
    'relu': (F.relu, torch.relu_),
}
KERNEL_KINDS = ('gelu', 'silu')


class ActivationFn(torch.autograd.Function):
    """An activation of :data:`_COMPOSITE` on the CPU kernel, differentiable once."""

    @staticmethod
    def forward(ctx, x, kind):
        from .kernels import load_backend
        ctx.save_for_backward(x)
        ctx.kind = kind
        return load_backend('cpu').activation(x, kind)

    @staticmethod
    def backward(ctx, grad):
        from .kernels import _differentiable_once, load_backend
        x, = ctx.saved_tensors
        dx = load_backend('cpu').activation_backward(grad.to(x.dtype), x, ctx.kind)
        return _differentiable_once('cpu', [dx], (grad, x), op=ctx.kind)[0], None


def _check_kind(kind: str) -> None:
    if kind not in _COMPOSITE:
        raise ValueError(f'unknown activation {kind!r}; expected one of {tuple(_COMPOSITE)}')


def _kernel_applies(kind: str, x: Tensor, backend: Optional[str]) -> bool:
    return (kind in KERNEL_KINDS and isinstance(x, Tensor) and x.dtype == torch.float32
            and cpu_kernel_applies(x.device, backend, 'activation'))


def apply(kind: str, x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """The activation ``kind`` ('gelu', 'silu' or 'relu') of x, a new tensor: the CPU
    kernel for 'gelu' / 'silu' where it applies (module docstring), else the composite."""
    _check_kind(kind)
    if not _kernel_applies(kind, x, backend):
        return _COMPOSITE[kind][0](x)
    if builds_graph((x, )):
        return ActivationFn.apply(x, kind)
    from .kernels import load_backend
    return load_backend('cpu').activation(x, kind)


def apply_(kind: str, x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """:func:`apply` written over ``x`` (returned); torch's in-place op where the kernel
    does not apply, where x is part of an autograd graph, or where x is neither
    contiguous nor a channels-last map."""
    _check_kind(kind)
    dense = x.is_contiguous() or (x.dim() == 4
                                  and x.is_contiguous(memory_format=torch.channels_last))
    if _kernel_applies(kind, x, backend) and dense and not builds_graph((x, )):
        from .kernels import load_backend
        return load_backend('cpu').activation(x, kind, True)
    return _COMPOSITE[kind][1](x)


def gelu(x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """``F.gelu(x)`` (exact), on the CPU kernel where it applies (module docstring).

    Args:
        x: any shape and strides.
        backend: selective-scan backend name or None.

    Returns:
        A new tensor of x's shape (and, on the kernel, x's strides where its values are
        dense in memory).
    """
    return apply('gelu', x, backend=backend)


def silu(x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """``F.silu(x)``, on the CPU kernel where it applies; as :func:`gelu`."""
    return apply('silu', x, backend=backend)


def gelu_(x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """``gelu`` written over ``x`` (returned); see :func:`apply_`."""
    return apply_('gelu', x, backend=backend)


def silu_(x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """``silu`` written over ``x`` (returned); as :func:`gelu_`."""
    return apply_('silu', x, backend=backend)
