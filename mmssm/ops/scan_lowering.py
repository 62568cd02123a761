"""The selective scan in plain tensor operations, for export (ONNX) and graph compilers.

:func:`selective_scan_export` computes exactly what :func:`mmssm.ops.selective_scan`
computes, with no Python control flow that depends on a tensor's value or on the
sequence length, so a traced graph stays valid for every batch size and length: every
operation maps onto a standard ONNX operator (Transpose, Mul, Exp, Softplus, Concat,
Split, Gather, Where, ReduceSum, ...). ``selective_scan`` calls it while
``torch.onnx.is_in_onnx_export()`` is true; it also runs eagerly, which is how the tests
hold it to the float64 reference.

The recurrence ``h_l = a_l h_{l-1} + b_l`` (``a = exp(dt A)``, ``b = dt B u``) is
evaluated as a *chunked* scan along a leading time axis (docs/kernels.md, "ONNX
lowering", has the measurements that chose it):

1. the sequence is cut into chunks of ``CHUNK`` steps; inside every chunk, all chunks
   at once, the states from a zero start are ``CHUNK`` unrolled multiply-adds and the
   decay products are ``exp(cumsum(dt A))``;
2. the chunk totals (each chunk's affine map ``x -> A x + B``) are scanned the same way
   in chunks of ``CHUNK``, and the totals of those super-chunks by a Hillis-Steele
   doubling scan of ``CARRY_STEPS`` steps;
3. each position adds ``A_partial * carry`` of the state entering its chunk.

Numerics: decays enter as ``log a = dt A <= 0``, so every ``exp`` is of a non-positive
sum of them (no overflow, no division); the result differs from the sequential
recurrence only by float32 rounding in another association order (max relative error
~1e-7 on the tests' cases). Sequences up to :data:`MAX_LENGTH` = 2**20 steps are exact;
a longer one (a 4096 x 4096 map at stride 4 is 2**20) gives NaN outputs, never wrong
numbers.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .reference import accumulation_dtype

Tensor = torch.Tensor

CHUNK = 16
CARRY_STEPS = 12
MAX_LENGTH = CHUNK * CHUNK * 2**CARRY_STEPS  # 2**20 steps


def pad_to_multiple(x: Tensor, multiple: int, dims: Sequence[int] = (0, )) -> Tensor:
    """Zero-pad ``x`` at the end of each of ``dims`` to a multiple of ``multiple``.

    Eagerly this is ``F.pad`` (``x`` itself when no padding is needed). During an ONNX
    export it is built from Range, Gather and Where, which keep the traced size: F.pad
    or new_zeros would bake the example's padding into the graph, wrong at other sizes.
    """
    if not torch.onnx.is_in_onnx_export():
        pads = [0] * (2 * x.dim())
        for d in dims:
            d = d % x.dim()
            pads[2 * (x.dim() - 1 - d) + 1] = -x.shape[d] % multiple
        return F.pad(x, pads) if any(pads) else x
    for d in dims:
        x = _pad_traced(x, multiple, d % x.dim())
    return x


def _pad_traced(x: Tensor, multiple: int, dim: int = 0) -> Tensor:
    """Zero-pad ``dim`` to a multiple of ``multiple`` from Range/Gather/Where only (the
    export path of :func:`pad_to_multiple`; the lowering uses it always)."""
    length = x.shape[dim]
    rows = torch.arange((length + multiple - 1) // multiple * multiple, device=x.device)
    inside = (rows < length).reshape([-1] + [1] * (x.dim() - 1 - dim))
    return torch.where(inside, x.index_select(dim, rows.clamp(max=length - 1)), 0.0)


def _local_scan(log_a: Tensor, b: Tensor, chunk: int) -> Tuple[Tensor, Tensor]:
    """Inclusive scan of ``x -> exp(log_a) x + b`` inside chunks along axis 0.

    Args:
        log_a, b: (n, M) log-decays (<= 0) and drives.
        chunk: steps per chunk.

    Returns:
        (log_A, B), each (n_chunks, chunk, M): the composed map from the chunk's start
        up to and including each step, ``x -> exp(log_A) x + B``. The last chunk is
        padded with the identity map (log_a = 0, b = 0).
    """
    # (reshape, not unflatten: the tracer loses the dynamic size through unflatten's -1)
    log_a = _pad_traced(log_a, chunk).reshape(-1, chunk, b.shape[1])
    b = _pad_traced(b, chunk).reshape(-1, chunk, b.shape[1])
    decay = torch.split(torch.exp(log_a), 1, dim=1)  # one Split, no Squeeze per step
    drive = torch.split(b, 1, dim=1)
    states = [drive[0]]
    for a_t, b_t in zip(decay[1:], drive[1:]):
        states.append(a_t * states[-1] + b_t)
    return torch.cumsum(log_a, 1), torch.cat(states, 1)


def _doubling_scan(log_a: Tensor, b: Tensor, steps: int) -> Tensor:
    """Inclusive Hillis-Steele scan of ``x -> exp(log_a) x + b`` along axis 0 (exact for
    up to ``2**steps`` rows): the states. Row ``i`` reads row ``i - shift`` through a
    Gather with clamped indices and a Where, valid for any shift (also >= rows)."""
    rows = torch.arange(b.shape[0], device=b.device)
    shift = 1
    for _ in range(steps):
        source = (rows - shift).clamp(min=0)
        valid = (rows >= shift).unsqueeze(1)
        b = torch.exp(log_a) * torch.where(valid, b.index_select(0, source), 0.0) + b
        log_a = log_a + torch.where(valid, log_a.index_select(0, source), 0.0)
        shift *= 2
    return b


def _exclusive(states: Tensor) -> Tensor:
    """(n, M) inclusive states -> the state before each row (zero for row 0)."""
    return F.pad(states, (0, 0, 1, 0))[:-1]


def linear_recurrence(log_a: Tensor, b: Tensor, chunk: int = CHUNK,
                      carry_steps: int = CARRY_STEPS) -> Tensor:
    """States ``h_l = exp(log_a_l) h_{l-1} + b_l`` (``h_{-1} = 0``) along axis 0 of
    (L, M) tensors, ``log_a <= 0``.

    Exact (up to float rounding) for ``L <= chunk**2 * 2**carry_steps``; a longer
    sequence gives NaN states instead of wrong numbers.
    """
    length = b.shape[0]
    la1, b1 = _local_scan(log_a, b, chunk)  # (c1, chunk, M)
    la2, b2 = _local_scan(la1[:, -1], b1[:, -1], chunk)  # of the chunk totals
    carry2 = _exclusive(_doubling_scan(la2[:, -1], b2[:, -1], carry_steps))
    ends = (b2 + torch.exp(la2) * carry2.unsqueeze(1)).flatten(0, 1)[:la1.shape[0]]
    carry1 = _exclusive(ends)  # the state entering each chunk
    states = (b1 + torch.exp(la1) * carry1.unsqueeze(1)).flatten(0, 1)[:length]
    # Past the doubling scan's reach the carries would be incomplete: poison the result.
    too_long = torch.as_tensor(length, device=b.device) > chunk * chunk * 2**carry_steps
    return torch.where(too_long, float('nan'), states)


def selective_scan_export(
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
    chunk: int = CHUNK,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Selective scan from standard tensor operations (arguments as in
    :func:`mmssm.ops.selective_scan`; B/C are 4-D (batch, G, N, L), validated by the
    caller). Accumulates in float32 (float64 for float64 input)."""
    in_dtype = u.dtype
    acc = accumulation_dtype(in_dtype)
    batch, dim, length = u.shape
    groups, dstate = B.shape[1], B.shape[2]
    # Time first: the scan's shifts and splits then move whole contiguous rows.
    u = u.to(acc).permute(2, 0, 1)  # (L, batch, dim)
    dt = delta.to(acc).permute(2, 0, 1)
    if delta_bias is not None:
        dt = dt + delta_bias.to(acc)
    if delta_softplus:
        # Softplus; above 20 it equals its input to float32 precision (the kernels'
        # threshold), so the ONNX operator gives the same numbers.
        dt = torch.nn.functional.softplus(dt)
    log_decay = dt.unsqueeze(-1) * A.to(acc)  # (L, batch, dim, N), <= 0
    per_group = dim // groups
    b_t = B.to(acc).permute(3, 0, 1, 2).unsqueeze(3)  # (L, batch, G, 1, N)
    c_t = C.to(acc).permute(3, 0, 1, 2).unsqueeze(3)
    drive = (dt * u).reshape(length, batch, groups, per_group, 1) * b_t
    states = linear_recurrence(log_decay.reshape(length, -1), drive.reshape(length, -1),
                               chunk)
    states = states.reshape(length, batch, groups, per_group, dstate)
    y = (states * c_t).sum(-1).reshape(length, batch, dim)
    if D is not None:
        y = y + D.to(acc) * u
    if z is not None:
        y = y * torch.nn.functional.silu(z.to(acc).permute(2, 0, 1))
    out = y.permute(1, 2, 0).to(in_dtype)
    if return_last_state:
        return out, states[-1].reshape(batch, dim, dstate)
    return out
