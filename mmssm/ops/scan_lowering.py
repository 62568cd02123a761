"""The selective scan in plain tensor operations, for export (ONNX) and graph compilers.

:func:`selective_scan_export` computes exactly what :func:`mmssm.ops.selective_scan`
computes, with no Python control flow that depends on a tensor's value or on the
sequence length, so a traced graph stays valid for every batch size and length: every
operation maps onto a standard ONNX operator (Transpose, Reshape, Split, Concat, Pad,
Slice, Mul, Add, Exp, Log, Relu, ReduceSum, ...). ``selective_scan`` calls it while
``torch.onnx.is_in_onnx_export()`` is true; it also runs eagerly, which is how the tests
hold it to the float64 reference.

The recurrence ``h_l = a_l h_{l-1} + b_l`` (``a = exp(dt A)``, ``b = dt B u``) runs as a
*chunked* scan; docs/kernels.md ("ONNX lowering") has the measurements that chose this
form and its layout:

1. **Layout.** The sequence is cut into ``n`` chunks of ``CHUNK`` steps and laid out
   step-major, ``(CHUNK, ..., n)``: one 2-D transpose per input, and each step is a
   contiguous slab holding that step of every chunk.
2. **Inside the chunks** (all chunks at once, ``CHUNK`` unrolled steps): each chunk's
   end state from a zero start, ``h = a_t h + b_t`` with ``a_t``, ``b_t`` built per step
   from the inputs; the chunk's total decay is ``exp(A * sum dt)``.
3. **Across chunks**: the state entering every chunk, from the chunks' affine maps
   ``x -> a x + b``, by :func:`exclusive_recurrence` along the chunk axis (the same
   chunking one level up, then a Hillis-Steele doubling scan of the few totals left).
4. **Outputs**: the chunk steps again, now from the entering state, each step's output
   ``y_t = sum_N C_t h`` written as soon as it is known.

Work: about ten passes over the (B, D, N, L) state-sized data (two per step), no
full-size copy, gather or select; the full-size states are never stored.

Numerics: the decays enter as products and ``exp`` of ``dt A <= 0``: nothing overflows
and nothing is divided. The result differs from the sequential recurrence only by float32
rounding in another association order (max relative error ~1e-7 on the tests' cases).
``softplus(x) = max(x, 0) + log(1 + exp(-|x|))`` (the kernels' formula; ONNX Runtime's
own Softplus operator is 10x slower); its absolute error is below 6e-8 where
``1 + exp(-|x|)`` rounds. Sequences up to :data:`MAX_LENGTH` = 2**20 steps are exact;
a longer one (a 4096 x 4096 map at stride 4 is 2**20) gives NaN outputs, never wrong
numbers.
"""
import contextlib
import contextvars
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .reference import accumulation_dtype

Tensor = torch.Tensor

CHUNK = 16  # steps per chunk (level 1)
CARRY_CHUNK = 16  # chunks per super-chunk (level 2)
CARRY_STEPS = 12  # doubling steps over the super-chunks (level 3)
MAX_LENGTH = CHUNK * CARRY_CHUNK * 2**CARRY_STEPS  # 2**20 steps

# The optional ONNX Runtime custom operator (csrc/onnxruntime, docs/deployment.md): one
# node ``mmssm.SelectiveScan`` instead of the standard-operator lowering.
SCAN_OP_FORMS = ('standard', 'custom')
CUSTOM_OP_DOMAIN = 'mmssm'
CUSTOM_OP_NAME = 'SelectiveScan'
CUSTOM_OP_VERSION = 1
_EXPORT_FORM = contextvars.ContextVar('mmssm_export_scan_form', default='standard')


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
    export path of :func:`pad_to_multiple`)."""
    length = x.shape[dim]
    rows = torch.arange((length + multiple - 1) // multiple * multiple, device=x.device)
    inside = (rows < length).reshape([-1] + [1] * (x.dim() - 1 - dim))
    return torch.where(inside, x.index_select(dim, rows.clamp(max=length - 1)), 0.0)


def softplus(x: Tensor) -> Tensor:
    """``max(x, 0) + log(1 + exp(-|x|))``: the kernels' branch-free formula (above 20 it
    equals ``x`` in float32, torch's threshold rule), from Relu/Abs/Exp/Log only."""
    return torch.relu(x) + torch.log1p(torch.exp(-x.abs()))


def to_steps(x: Tensor, chunk: int, fill: float = 0.0) -> Tensor:
    """(..., L) -> (chunk, ..., n), ``n = ceil(L / chunk)``: element ``[t, ..., k]`` is
    ``x[..., k * chunk + t]``; the end is padded with ``fill``. One 2-D transpose."""
    length = x.shape[-1]
    lead = list(x.shape[:-1])
    x = F.pad(x, (0, (chunk - length % chunk) % chunk), value=fill)
    return x.reshape(-1, chunk).transpose(0, 1).reshape([chunk] + lead + [-1])


def from_steps(y: Tensor, length) -> Tensor:
    """Inverse of :func:`to_steps`: (chunk, ..., n) -> (..., length)."""
    chunk, lead = y.shape[0], list(y.shape[1:-1])
    flat = y.reshape(chunk, -1).transpose(0, 1)  # (prod(lead) * n, chunk)
    return flat.reshape(lead + [-1])[..., :length]


def _shift(x: Tensor, shift: int, fill: float) -> Tensor:
    """``x[..., k - shift]`` along the last axis, ``fill`` where ``k < shift`` (any
    shift, also past the end: the padding is capped at the length, also in a traced
    graph, where the length is a tensor)."""
    length = x.shape[-1]
    if isinstance(length, Tensor):  # traced size: the cap becomes a graph Min
        pad = torch.clamp(length, max=shift)
    else:
        pad = min(length, shift)
    return F.pad(x, (pad, 0), value=fill)[..., :length]


def _acc(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``; no Cast node in a traced graph when it already is."""
    return t if t.dtype == dtype else t.to(dtype)


def _doubling_scan(a: Tensor, b: Tensor, steps: int) -> Tensor:
    """Inclusive Hillis-Steele scan of ``x -> a x + b`` along the last axis: the states
    from a zero start, exact for up to ``2**steps`` entries."""
    shift = 1
    for _ in range(steps):
        b = a * _shift(b, shift, 0.0) + b
        a = a * _shift(a, shift, 1.0)
        shift *= 2
    return b


def exclusive_recurrence(a: Tensor, b: Tensor, chunk: int = CARRY_CHUNK,
                         steps: int = CARRY_STEPS) -> Tensor:
    """States *entering* each position of ``h_k = a_k h_{k-1} + b_k`` along the last axis
    (``h_{-1} = 0``, so entry 0 is zero), ``0 <= a <= 1``.

    Chunks of ``chunk`` entries (unrolled, step-major as in :func:`to_steps`), then a
    doubling scan over the chunk totals. Exact (up to float rounding) for up to
    ``chunk * 2**steps`` entries; more give NaN, never wrong numbers.
    """
    length = b.shape[-1]
    a_steps = torch.split(to_steps(a, chunk), 1, 0)
    b_steps = torch.split(to_steps(b, chunk), 1, 0)
    # Inside each chunk, from a zero start: the state before step t (None: zero) and
    # the decay from the chunk's start up to step t (None: one).
    before: List[Tuple[Optional[Tensor], Optional[Tensor]]] = []
    h = decay = None
    for a_t, b_t in zip(a_steps, b_steps):
        before.append((h, decay))
        h = b_t if h is None else a_t * h + b_t
        decay = a_t if decay is None else decay * a_t
    entering = _shift(_doubling_scan(decay, h, steps), 1, 0.0)  # (1, ..., n_chunks)
    too_long = torch.as_tensor(length, device=b.device) > chunk * 2**steps
    entering = entering + torch.where(too_long, float('nan'), 0.0).to(b.dtype)
    rows = [entering] + [p * entering + s for s, p in before[1:]]
    return from_steps(torch.cat(rows, 0), length)


@contextlib.contextmanager
def export_scan_as(form: str) -> Iterator[str]:
    """Inside the block, an exported ``selective_scan`` becomes ``form``:

    * ``'standard'``: standard ONNX operators (:func:`selective_scan_export`), any
      runtime;
    * ``'custom'``: one ``mmssm.SelectiveScan`` node (domain ``mmssm``, version 1),
      which only ONNX Runtime with mmssm's operator library (``mmssm._ort_ops``,
      built from csrc/) can run. float32 scans without ``return_last_state`` only;
      others keep the standard form.
    """
    if form not in SCAN_OP_FORMS:
        raise ValueError(f'unknown exported scan form {form!r}; choose one of '
                         f'{SCAN_OP_FORMS}')
    token = _EXPORT_FORM.set(form)
    try:
        yield form
    finally:
        _EXPORT_FORM.reset(token)


class SelectiveScanCustomOp(torch.autograd.Function):
    """The scan as one ``mmssm.SelectiveScan`` node of an ONNX export.

    Node inputs: u (batch, dim, L), delta (batch, dim, L), A (dim, N),
    B (batch, G, N, L), C (batch, G, N, L), D (dim,), delta_bias (dim,) and, optionally,
    z (batch, dim, L); attribute ``delta_softplus`` (0/1); one output (batch, dim, L).
    Absent D / delta_bias are exported as zeros (the same function). All float32.
    Eagerly (what the tracer runs to know the output) it is the C++ kernel, else the
    standard lowering.
    """

    @staticmethod
    def forward(ctx, delta_softplus, u, delta, A, B, C, D, delta_bias, *gate):
        # (the optional gate z as a trailing vararg: a None among a Function's inputs
        # breaks the TorchScript exporter)
        z = gate[0] if gate else None
        from .kernels import backend_available, load_backend
        if backend_available('cpu'):  # the kernel itself (not its autograd Function)
            args = [None if t is None else t.contiguous()
                    for t in (u, delta, A, B, C, D, z, delta_bias)]
            return load_backend('cpu').fwd(*args, bool(delta_softplus))[0]
        with export_scan_as('standard'):
            return selective_scan_export(u, delta, A, B, C, D, z, delta_bias,
                                         delta_softplus)

    @staticmethod
    def symbolic(g, delta_softplus, *inputs):
        out = g.op(f'{CUSTOM_OP_DOMAIN}::{CUSTOM_OP_NAME}', *inputs,
                   delta_softplus_i=int(bool(delta_softplus)))
        out.setType(inputs[0].type())
        return out


def _custom_op_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    dim = u.shape[1]
    weights = [t.float() if t is not None else u.new_zeros(dim) for t in (D, delta_bias)]
    gate = () if z is None else (z, )
    return SelectiveScanCustomOp.apply(bool(delta_softplus), u, delta, A.float(), B, C,
                                       *weights, *gate)


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
    caller). Accumulates in float32 (float64 for float64 input).

    Inside an :func:`export_scan_as` ``('custom')`` block, a float32 scan without
    ``return_last_state`` is exported as one ``mmssm.SelectiveScan`` node instead."""
    if (_EXPORT_FORM.get() == 'custom' and torch.onnx.is_in_onnx_export()
            and not return_last_state and u.dtype == torch.float32):
        return _custom_op_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    in_dtype = u.dtype
    acc = accumulation_dtype(in_dtype)
    batch, dim, length = u.shape
    groups, dstate = B.shape[1], B.shape[2]
    per_group = dim // groups
    u = _acc(u, acc)
    dt = _acc(delta, acc)
    if delta_bias is not None:
        dt = dt + _acc(delta_bias, acc).unsqueeze(-1)
    # State layout (batch, G, dim/G, N, chunks). Padded steps are identity maps: dt = 0
    # there (softplus(-inf) = 0).
    #
    # Each input's first operation after its transpose to the step layout is elementwise
    # (the softplus, the product with dt, a negation): directly followed by the step
    # Split, ONNX Runtime's transpose optimizer would move the transpose past the Split,
    # which then slices the last axis element by element (~25x slower).
    grouped = [batch, groups, per_group, 1, length]
    dt_steps = to_steps(dt.reshape(grouped), chunk, float('-inf') if delta_softplus else 0.0)
    if delta_softplus:
        dt_steps = softplus(dt_steps)  # (chunk, batch, G, dim/G, 1, n)
    drive_steps = dt_steps * to_steps(u.reshape(grouped), chunk)
    # B and C enter negated (exact): the states are negated and y = sum (-C)(-h) is not.
    b_steps = -to_steps(_acc(B, acc).unsqueeze(2), chunk)  # (chunk, batch, G, 1, N, n)
    c_steps = -to_steps(_acc(C, acc).unsqueeze(2), chunk)
    a_mat = _acc(A, acc).reshape(groups, per_group, dstate, 1)

    # Inside the chunks from a zero start: each chunk's end state.
    decays, drives = [], []
    state = dt_sum = None
    for dt_t, du_t, b_t in zip(torch.split(dt_steps, 1, 0), torch.split(drive_steps, 1, 0),
                               torch.split(b_steps, 1, 0)):
        decays.append(torch.exp(dt_t * a_mat))
        drives.append(du_t * b_t)
        state = drives[-1] if state is None else decays[-1] * state + drives[-1]
        dt_sum = dt_t if dt_sum is None else dt_sum + dt_t  # (a ReduceSum is slower)
    # Across chunks: the state entering each chunk (chunk decay = exp(A sum dt)).
    state = exclusive_recurrence(torch.exp(dt_sum * a_mat), state)
    # The chunks again, from the entering state: the outputs.
    ys = []
    for a_t, x_t, c_t in zip(decays, drives, torch.split(c_steps, 1, 0)):
        state = a_t * state + x_t
        ys.append(state * c_t if dstate == 1 else (state * c_t).sum(-2, keepdim=True))
    y = from_steps(torch.cat(ys, 0), length).reshape(batch, dim, length)
    if D is not None:
        y = y + _acc(D, acc).unsqueeze(-1) * u
    if z is not None:
        y = y * F.silu(_acc(z, acc))
    out = _acc(y, in_dtype)
    if return_last_state:
        return out, -state[..., -1].reshape(batch, dim, dstate)
    return out


# ------------------------------------------------------------------ gather / merge
# The export paths of mmssm.ops.scan_patterns.scan_gather / scan_merge. Both move whole
# pixel rows (channels last): ONNX Runtime gathers rows as block copies, while a Gather
# or ScatterElements along the last axis moves one element at a time (~15x slower).
def scan_gather_export(x: Tensor, index: Tensor) -> Tensor:
    """``scan_gather`` from Transpose, Pad and a Gather of whole pixel rows.

    Args:
        x: (B, C, H, W) or (B, C, P) features.
        index: (K, L') pixel indices, -1 for a padding step (reads zero).

    Returns:
        (B, K, C, L'), ``out[b, k, c, l] = x_flat[b, c, index[k, l]]``.
    """
    # (flatten only a 4-D map: flatten(2) of a 3-D tensor whose rank the exporter lost
    # becomes a wrong Reshape)
    flat = x if x.dim() == 3 else x.flatten(2)
    batch, channels, pixels = flat.shape
    routes, length = index.shape
    rows = F.pad(flat.transpose(1, 2), (0, 0, 0, 1))  # (B, P + 1, C); row P is zero
    where = torch.where(index < 0, torch.full_like(index, pixels), index)
    out = rows.index_select(1, where.reshape(-1))
    return out.reshape(batch, routes, length, channels).transpose(2, 3)


def scan_merge_export(ys: Tensor, index: Tensor, size: Sequence,
                      segments: Optional[int] = None) -> Tensor:
    """``scan_merge`` for export.

    Args:
        ys: (B, K, C, L') route outputs.
        index: (K, L') the map of the gather.
        size: spatial size of the result (traced sizes allowed).
        segments: each route is ``segments`` equal parts in each of which a pixel
            appears at most once (1 for permutations and the atrous routes). Then the
            merge is a Gather of whole rows through the inverse maps (built in the graph
            from the small index, not the features) and a sum over the parts. None (an
            index of unknown structure): ``ScatterElements(reduction='add')``, exact
            for any index but element by element.

    Returns:
        (B, C, *size).
    """
    batch, routes, channels, length = ys.shape
    pixels = 1
    for s in size:
        pixels = pixels * s
    if segments is None:
        flat_index = index.reshape(-1)
        flat_index = torch.where(flat_index < 0, torch.full_like(flat_index, pixels),
                                 flat_index)  # padding steps land in pixel P (dropped)
        src = ys.transpose(1, 2).reshape(batch, channels, routes * length)
        index3 = flat_index.reshape(1, 1, -1).expand(batch, channels, -1)
        out = torch.zeros_like(src[:, :, :1]).expand(-1, -1, pixels + 1)
        out = out.scatter_add(2, index3, src)[:, :, :pixels]
        return out.reshape([batch, channels] + list(size))
    parts = routes * segments
    part_len = length // segments
    steps = index.reshape(parts, -1)  # (parts, L'/S)
    steps = torch.where(steps < 0, torch.full_like(steps, pixels), steps)
    # inverse[r, p]: the step of part r that visits pixel p; part_len (a zero row) if none
    positions = torch.arange(part_len, device=index.device)
    inverse = (torch.zeros_like(steps[:1, :1]) + part_len).expand(parts, pixels + 1)
    inverse = inverse.scatter(1, steps, positions.unsqueeze(0).expand(parts, -1))
    offsets = torch.arange(parts, device=index.device).unsqueeze(1) * (part_len + 1)
    gather_at = (inverse[:, :pixels] + offsets).reshape(-1)  # (parts * P)
    rows = ys.reshape(batch, routes, channels, segments, part_len).permute(0, 1, 3, 4, 2)
    rows = F.pad(rows.reshape(batch, parts, part_len, channels), (0, 0, 0, 1)).reshape(batch, -1, channels)  # (B, parts*(L/S+1), C)
    out = rows.index_select(1, gather_at).reshape(batch, parts, pixels, channels).sum(1)
    return out.transpose(1, 2).reshape([batch, channels] + list(size))
