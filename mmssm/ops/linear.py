"""``linear``: a linear map over the last axis, optionally followed by an activation.

    linear(x, weight, bias, activation) == act(x @ weight.T + bias)

Two implementations of this one function:

* **composite** (any device and dtype, autograd, tracing, ONNX export): ``F.linear``,
  then the activation (``'gelu'`` / ``'silu'``: :mod:`mmssm.ops.activation`, whose
  CPU kernel also runs in training);
* **fused** (CPU, float32, no autograd graph to build: inference): on CPUs with AVX-512,
  oneDNN's linear with the activation as a post-op, ``torch.ops.mkldnn._linear_pointwise``
  -- the kernel ``torch.compile``'s CPU backend emits for this pattern. It writes the
  activation in the same pass as the product (no second pass over a 4x-wide MLP hidden
  map) and, on an AVX-512 EPYC VM, multiplies 5-15 % faster than ``F.linear``'s BLAS call
  at the backbones' shapes. On CPUs without AVX-512 oneDNN is no faster than
  ``F.linear`` and its GELU post-op is 5-45 % slower than ``F.linear`` followed by
  torch's GELU (an AVX2 EPYC VM, docs/benchmarks.md), so there the fused path is
  ``F.linear`` followed by the activation in place (no second buffer; GELU's and SiLU's
  by :mod:`mmssm.ops.activation`). Results equal
  the composite's up to rounding (a different summation order).

The fused path follows the selective-scan backend choice (``backend`` /
:func:`~mmssm.ops.scan_backend` / ``MMSSM_SCAN_BACKEND``): ``'torch'`` keeps everything
in plain PyTorch ops, as do autocast, JIT traces (FLOP counting) and ONNX export. Where
torch is built without oneDNN the composite path runs.
"""
import functools
from typing import Optional

import torch
import torch.nn.functional as F

from . import activation as activations
from .selective_scan import fused_inference_applies

Tensor = torch.Tensor

# activation name -> (oneDNN post-op name, its algorithm argument). Unfused, each is
# mmssm.ops.activation's (exact GELU and SiLU on its CPU kernel where it applies).
ACTIVATIONS = {
    None: ('none', ''),
    'gelu': ('gelu', 'none'),  # exact (erf) GELU, nn.GELU()'s default
    'silu': ('swish', ''),
    'relu': ('relu', ''),
}


def _check_activation(activation: Optional[str]) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f'linear: unknown activation {activation!r}; expected one of '
                         f'{tuple(ACTIVATIONS)}')


@functools.lru_cache(maxsize=None)
def _onednn_linear():
    """``torch.ops.mkldnn._linear_pointwise`` where this torch build has it and torch
    runs its AVX-512 kernels on this CPU (see the module docstring), else None (looked
    up once)."""
    if (not torch.backends.mkldnn.is_available()
            or not torch.backends.cpu.get_cpu_capability().startswith('AVX512')):
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def activate(x: Tensor, activation: Optional[str], *, backend: Optional[str] = None
             ) -> Tensor:
    """The activation ``activation`` (a name of :data:`ACTIVATIONS`) of x, unfused
    (:func:`mmssm.ops.activation.apply`, which ``backend`` may keep on torch's ops)."""
    _check_activation(activation)
    return x if activation is None else activations.apply(activation, x, backend=backend)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           activation: Optional[str] = None, *, backend: Optional[str] = None) -> Tensor:
    """``activation(F.linear(x, weight, bias))``, fused on CPU float32 inference.

    Args:
        x: (..., in_features), any strides.
        weight: (out_features, in_features).
        bias: (out_features,) or None.
        activation: None, ``'gelu'`` (exact), ``'silu'`` or ``'relu'``.
        backend: selective-scan backend name or None (see the module docstring).

    Returns:
        (..., out_features).
    """
    _check_activation(activation)
    post_op, algorithm = ACTIVATIONS[activation]
    if (x.dim() >= 2 and x.numel() > 0 and weight.dim() == 2
            and x.shape[-1] == weight.shape[1]
            and fused_inference_applies((x, weight, bias), backend, None)):
        fused = _onednn_linear()
        if fused is not None:
            return fused(x, weight, bias, post_op, [], algorithm)
        out = F.linear(x, weight, bias)  # a fresh buffer: activated in place
        if activation is None:
            return out
        return activations.apply_(activation, out, backend=backend)
    return activate(F.linear(x, weight, bias), activation, backend=backend)
