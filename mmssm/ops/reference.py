"""Pure-PyTorch selective scan: the ``'torch'`` backend and the test oracle.

Differentiable through autograd and float64-capable. It is a plain sequential loop over
the time axis, so it is slow; the compiled backends exist for speed, this one for
clarity and as the reference every kernel is tested against.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 inputs accumulate in fp64; every other input dtype in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    z: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Reference selective scan (no input validation; see ``selective_scan``).

    Args:
        u, delta: (batch, dim, L).
        A: (dim, N).
        B, C: (batch, G, N, L); channel ``d`` reads group ``d // (dim // G)``.
        D, delta_bias: (dim,) or None.
        z: (batch, dim, L) or None; gates the output by ``silu(z)``.

    Returns:
        out (batch, dim, L) in ``u.dtype`` and, if ``return_last_state``, the final
        state (batch, dim, N) in the accumulation dtype (fp32, or fp64 for fp64 input).
    """
    in_dtype = u.dtype
    acc = accumulation_dtype(in_dtype)
    batch, dim, seqlen = u.shape
    groups = B.shape[1]
    u, delta, A = u.to(acc), delta.to(acc), A.to(acc)
    # (batch, G, N, L) -> (batch, dim, N, L): every channel of a group sees its B/C.
    B = B.to(acc).repeat_interleave(dim // groups, dim=1)
    C = C.to(acc).repeat_interleave(dim // groups, dim=1)

    dt = delta if delta_bias is None else delta + delta_bias.to(acc)[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)  # beta 1, threshold 20: identical to the kernels' rule
    decay = torch.exp(dt.unsqueeze(2) * A[None, :, :, None])  # (batch, dim, N, L)
    drive = dt.unsqueeze(2) * B * u.unsqueeze(2)  # (batch, dim, N, L)

    state = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    # Split the time axis once: indexing step t inside the loop would make autograd
    # build a full-size gradient per step (quadratic backward in L).
    steps = zip(decay.unbind(-1), drive.unbind(-1), C.unbind(-1))
    for decay_t, drive_t, c_t in steps:
        state = decay_t * state + drive_t
        ys.append((state * c_t).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + D.to(acc)[None, :, None] * u
    if z is not None:
        y = y * F.silu(z.to(acc))
    out = y.to(in_dtype)
    return (out, state) if return_last_state else out


class SelectiveScanReference(torch.autograd.Function):
    """The pure-PyTorch reference scan as ONE autograd node, forward only.

    Traced as is, the reference is a Python loop over L whose thousands of small ops a
    tracer records one by one; run through this Function (``selective_scan`` does so
    inside ``scan_backend('torch', opaque_reference=True)``), a trace records a single
    ``prim::PythonOp.SelectiveScanReference`` node, like the compiled op's
    ``SelectiveScanFn`` (mmssm's FLOP counter counts either exactly once)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                return_last_state):
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias,
                                        delta_softplus, return_last_state)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError('the opaque reference scan (scan_backend(..., '
                           'opaque_reference=True)) is forward-only; use the plain '
                           "'torch' backend for gradients")
