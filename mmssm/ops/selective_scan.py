"""``selective_scan``: input validation and backend dispatch.

Backends:
    ``'torch'``: :func:`mmssm.ops.reference.selective_scan_reference` (autograd, fp64).
    ``'cpu'``:   the C++ kernels in ``mmssm._C`` (csrc/selective_scan/cpu).
    ``'cuda'``:  the CUDA kernels in ``mmssm._C_cuda`` (csrc/selective_scan/cuda).
``backend=None`` picks ``'cuda'`` for CUDA tensors and ``'cpu'`` for CPU tensors, unless
a :func:`scan_backend` block or the environment variable ``MMSSM_SCAN_BACKEND`` names a
backend (useful to run a whole model on the reference path for debugging or analysis).
While ``torch.onnx.is_in_onnx_export()`` is true the scan is traced as standard tensor
operations instead (:func:`mmssm.ops.scan_lowering.selective_scan_export`), whatever the
backend.
"""
import contextlib
import contextvars
import os
from typing import Iterator, Optional, Tuple, Union

import torch

from .reference import SelectiveScanReference, selective_scan_reference
from .scan_lowering import selective_scan_export

Tensor = torch.Tensor

BACKENDS = ('cuda', 'cpu', 'torch')
# (backend, opaque_reference) chosen by the innermost scan_backend() block, if any.
_SCOPED_BACKEND = contextvars.ContextVar('mmssm_scan_backend', default=None)
_AUTOCAST_DEVICES = ('cpu', 'cuda')
_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _check_tensor(name: str, t, shape: Tuple[int, ...], what: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'selective_scan: {name} must be a torch.Tensor, '
                        f'got {type(t).__name__}')
    if not t.is_floating_point():
        raise TypeError(f'selective_scan: {name} must be a floating-point tensor, '
                        f'got dtype {t.dtype}')
    if t.dim() != len(shape):
        raise ValueError(f'selective_scan: {name} must have {len(shape)} dims {what}, '
                         f'got shape {_shape(t)} (expected {shape})')
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f'selective_scan: {name} has shape {_shape(t)}, expected '
                         f'{tuple(shape)} {what}')


def validate_inputs(u, delta, A, B, C, D, z, delta_bias) -> Tuple[Tensor, Tensor]:
    """Check ranks, shapes, dtypes and devices; return (B, C) in their 4-D form.

    ``B``/``C`` may be given as (batch, N, L), meaning a single group.
    Raises ``TypeError`` for wrong types/dtypes and ``ValueError`` for wrong shapes or
    devices, naming the argument, its shape and the expected one.
    """
    if not isinstance(u, torch.Tensor):
        raise TypeError(f'selective_scan: u must be a torch.Tensor, got {type(u).__name__}')
    if u.dim() != 3:
        raise ValueError(f'selective_scan: u must be (batch, dim, L), got shape {_shape(u)}')
    if u.dtype not in _INPUT_DTYPES:
        raise TypeError(f'selective_scan: u has dtype {u.dtype}; supported: '
                        'float32, float16, bfloat16 (float64 on the cpu/torch backends)')
    batch, dim, seqlen = u.shape
    _check_tensor('delta', delta, (batch, dim, seqlen), '(batch, dim, L) like u')
    if not isinstance(A, torch.Tensor) or A.dim() != 2:
        got = _shape(A) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f'selective_scan: A must be (dim, N) = ({dim}, N), got {got}')
    dstate = A.shape[1]
    _check_tensor('A', A, (dim, dstate), '(dim, N)')
    if dstate < 1:
        raise ValueError(f'selective_scan: A has shape {_shape(A)}; N must be >= 1')

    def as_grouped(name: str, t):
        if isinstance(t, torch.Tensor) and t.dim() == 3:  # (batch, N, L): one group
            _check_tensor(name, t, (batch, dstate, seqlen), '(batch, N, L), i.e. G = 1')
            t = t.unsqueeze(1)
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            got = _shape(t) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f'selective_scan: {name} must be (batch, G, N, L) = '
                             f'({batch}, G, {dstate}, {seqlen}), got {got}')
        return t

    B = as_grouped('B', B)
    C = as_grouped('C', C)
    groups = B.shape[1]
    if groups < 1 or dim % groups != 0:
        raise ValueError(f'selective_scan: dim={dim} (u {_shape(u)}) is not divisible by '
                         f'the number of groups G={groups} (B {_shape(B)})')
    _check_tensor('B', B, (batch, groups, dstate, seqlen), '(batch, G, N, L)')
    _check_tensor('C', C, (batch, groups, dstate, seqlen), '(batch, G, N, L) like B')
    if D is not None:
        _check_tensor('D', D, (dim,), '(dim,)')
    if delta_bias is not None:
        _check_tensor('delta_bias', delta_bias, (dim,), '(dim,)')
    if z is not None:
        _check_tensor('z', z, (batch, dim, seqlen), '(batch, dim, L) like u')

    # Activations share u's dtype; weights (A, D, delta_bias) may be any float dtype
    # and are used in the accumulation dtype.
    for name, t in (('delta', delta), ('B', B), ('C', C), ('z', z)):
        if t is not None and t.dtype != u.dtype:
            raise TypeError(f'selective_scan: {name} has dtype {t.dtype} but u has '
                            f'{u.dtype}; u, delta, B, C and z must share one dtype')
    for name, t in (('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D),
                    ('z', z), ('delta_bias', delta_bias)):
        if t is not None and t.device != u.device:
            raise ValueError(f'selective_scan: {name} is on {t.device} but u is on '
                             f'{u.device}; all inputs must be on one device')
    return B, C


def _autocast_activations(u, delta, B, C, z):
    """Under ``torch.autocast`` the activations may arrive in mixed dtypes (e.g. u from a
    conv in bf16, delta from an fp32 op). Then they are all cast to the autocast dtype;
    activations that already share one dtype run in that dtype. Weights (A, D,
    delta_bias) are never cast: the kernels read them in the accumulation dtype."""
    if (not isinstance(u, torch.Tensor) or u.device.type not in _AUTOCAST_DEVICES
            or not torch.is_autocast_enabled(u.device.type)):
        return u, delta, B, C, z
    acts = [t for t in (u, delta, B, C, z) if isinstance(t, torch.Tensor)]
    dtypes = {t.dtype for t in acts}
    if len(dtypes) == 1 or not dtypes <= {torch.float32, torch.float16, torch.bfloat16}:
        return u, delta, B, C, z
    target = torch.get_autocast_dtype(u.device.type)
    return tuple(t.to(target) if isinstance(t, torch.Tensor) else t
                 for t in (u, delta, B, C, z))


def resolve_backend(backend: Optional[str], device: torch.device,
                    check_available: bool = False) -> str:
    """The backend a scan on ``device`` runs with.

    Args:
        backend: a name of :data:`BACKENDS`; ``None`` for the innermost
            :func:`scan_backend` block's choice, else ``$MMSSM_SCAN_BACKEND``, else the
            device's compiled backend; ``'auto'`` for the device's compiled backend when
            it is built, else ``'torch'``.
        device: where the tensors live.
        check_available: also refuse a compiled backend that cannot run on ``device``
            or is not built here (otherwise the kernel loader reports it on first use).
    """
    if backend is None:
        scoped = _SCOPED_BACKEND.get()
        backend = scoped[0] if scoped else (os.environ.get('MMSSM_SCAN_BACKEND') or None)
    compiled = 'cuda' if device.type == 'cuda' else 'cpu'
    if backend is None:
        return compiled
    if backend == 'auto':
        from .kernels import backend_available
        return compiled if backend_available(compiled) else 'torch'
    if backend not in BACKENDS:
        raise ValueError(f'selective_scan: unknown backend {backend!r}; '
                         f"choose one of {BACKENDS}, 'auto' or None")
    if check_available and backend != 'torch':
        from .kernels import backend_available
        if backend != compiled:
            raise ValueError(f'scan backend {backend!r} cannot run a model on {device}')
        if not backend_available(backend):
            raise RuntimeError(f'scan backend {backend!r} is not built/available here; '
                               "use 'torch' or 'auto'")
    return backend


def cpu_kernel_applies(device: torch.device, backend: Optional[str],
                       entry: Optional[str]) -> bool:
    """Whether a call on ``device`` may run a fused CPU kernel: ``entry`` of
    ``mmssm._C`` (``fwd_lowrank``, ``route_conv_silu``, ``route_merge_gate``), or, with
    ``entry=None``, one of torch's own oneDNN kernels (:func:`mmssm.ops.linear.linear`).
    It may where the ``backend`` resolves to ``'cpu'`` for a CPU tensor, the extension is
    built with ``entry``, and nothing needs the ops spelled out as torch ops -- autocast
    (which chooses their dtypes), a JIT trace (FLOP counting) or an ONNX export."""
    if device.type != 'cpu' or resolve_backend(backend, device) != 'cpu':
        return False
    if (torch.is_autocast_enabled('cpu') or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()):
        return False
    if entry is None:
        return True
    from .kernels import backend_available, load_backend
    return backend_available('cpu') and hasattr(load_backend('cpu'), entry)


def builds_graph(tensors) -> bool:
    """Whether an autograd graph is to be built through ``tensors`` (None entries
    ignored): grad mode is on and one of them requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in tensors)


def fused_inference_applies(tensors, backend: Optional[str], entry: Optional[str]) -> bool:
    """Whether a fused float32 inference kernel (see :func:`cpu_kernel_applies`) runs for
    ``tensors`` (None entries ignored): all are float32 and no autograd graph is to be
    built through them (training takes the composite path, which has the graph)."""
    tensors = [t for t in tensors if t is not None]
    if any(t.dtype != torch.float32 for t in tensors):
        return False
    if builds_graph(tensors):
        return False
    return cpu_kernel_applies(tensors[0].device, backend, entry)


@contextlib.contextmanager
def scan_backend(backend: str, opaque_reference: bool = False) -> Iterator[str]:
    """Run every ``selective_scan`` called without an explicit ``backend`` inside the
    block (in this thread / context) with ``backend``.

    With ``opaque_reference`` the ``'torch'`` backend runs as one forward-only autograd
    node (:class:`~mmssm.ops.reference.SelectiveScanReference`), so that a trace
    records each scan once, as it does for the compiled op. Blocks nest; the
    environment variable ``MMSSM_SCAN_BACKEND`` is left alone.
    """
    if backend not in BACKENDS:
        raise ValueError(f'scan_backend: unknown backend {backend!r}; choose one of '
                         f'{BACKENDS}')
    token = _SCOPED_BACKEND.set((backend, bool(opaque_reference)))
    try:
        yield backend
    finally:
        _SCOPED_BACKEND.reset(token)


def selective_scan(
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
    *,
    backend: Optional[str] = None,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Selective scan (Mamba S6, real A) with grouped B/C.

    Args:
        u: (batch, dim, L) input, fp32/fp16/bf16 (fp64 on the cpu/torch backends).
        delta: (batch, dim, L) time steps, same dtype as ``u``.
        A: (dim, N) state matrix diagonal (typically ``-exp(A_log)``).
        B, C: (batch, G, N, L) input/output projections, ``dim % G == 0``; channel
            ``d`` uses group ``d // (dim // G)``. (batch, N, L) means G = 1.
        D: (dim,) skip weight, optional.
        z: (batch, dim, L) gate, optional: ``out = y * silu(z)``.
        delta_bias: (dim,) added to ``delta`` before the softplus, optional.
        delta_softplus: apply ``softplus`` to ``delta + delta_bias``.
        return_last_state: also return the final state (batch, dim, N), fp32
            (fp64 for fp64 input); it carries no gradient.
        backend: ``'cuda'``, ``'cpu'``, ``'torch'`` or None (by device).

    Under ``torch.autocast`` the op runs in the activations' dtype; activations of
    mixed dtypes are first cast to the autocast dtype. Accumulation is always fp32.

    Returns:
        ``out`` (batch, dim, L) in ``u.dtype``, or ``(out, last_state)``.
    """
    u, delta, B, C, z = _autocast_activations(u, delta, B, C, z)
    B, C = validate_inputs(u, delta, A, B, C, D, z, delta_bias)
    if torch.onnx.is_in_onnx_export():  # no exporter knows the compiled kernels
        return selective_scan_export(u, delta, A, B, C, D, z, delta_bias,
                                     delta_softplus, return_last_state)
    backend = resolve_backend(backend, u.device)
    # The scan accumulates in fp32 itself; autocast must not re-cast anything inside.
    no_autocast = (torch.autocast(device_type=u.device.type, enabled=False)
                   if u.device.type in _AUTOCAST_DEVICES else contextlib.nullcontext())
    with no_autocast:
        if backend == 'torch':
            scoped = _SCOPED_BACKEND.get()
            reference = (SelectiveScanReference.apply if scoped and scoped[1]
                         else selective_scan_reference)
            return reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                             return_last_state)
        from .kernels import selective_scan_kernel
        return selective_scan_kernel(backend, u, delta, A, B, C, D, z, delta_bias,
                                     delta_softplus, return_last_state)


def selective_scan_lowrank(
    u: Tensor,
    delta_lowrank: Tensor,
    delta_weight: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    z: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    backend: Optional[str] = None,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """:func:`selective_scan` with delta given by its low-rank factors (Mamba's dt
    projection): ``delta[b, d, l] = sum_r delta_weight[d, r] * delta_lowrank[b, g(d), r, l]``
    with ``g(d)`` the B/C group of channel ``d``.

    On the ``'cpu'`` backend (float inputs, outside autocast, tracing and ONNX export) the
    kernel forms delta in registers: the (batch, dim, L) delta tensor and the matmul that
    writes it are skipped (the backward forms it once). Everywhere else delta is formed
    with one batched matmul (in u's dtype) and :func:`selective_scan` runs as usual.

    Args:
        u, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend: as for
            :func:`selective_scan` (B / C as (batch, G, N, L)).
        delta_lowrank: (batch, G, R, L), u's dtype.
        delta_weight: (dim, R), any float dtype (used in the accumulation dtype on the
            ``'cpu'`` kernel, in u's dtype when delta is formed by a matmul).
    """
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        got = _shape(u) if isinstance(u, torch.Tensor) else type(u).__name__
        raise ValueError(f'selective_scan_lowrank: u must be (batch, dim, L), got {got}')
    batch, dim, seqlen = u.shape
    if not isinstance(delta_lowrank, torch.Tensor) or delta_lowrank.dim() != 4:
        got = (_shape(delta_lowrank) if isinstance(delta_lowrank, torch.Tensor)
               else type(delta_lowrank).__name__)
        raise ValueError(f'selective_scan_lowrank: delta_lowrank must be (batch, G, R, L) = '
                         f'({batch}, G, R, {seqlen}), got {got}')
    groups, rank = delta_lowrank.shape[1:3]
    if groups < 1 or dim % groups != 0:
        raise ValueError(f'selective_scan_lowrank: dim={dim} (u {_shape(u)}) is not divisible '
                         f'by the groups G={groups} of delta_lowrank {_shape(delta_lowrank)}')
    _check_tensor('delta_lowrank', delta_lowrank, (batch, groups, rank, seqlen),
                  '(batch, G, R, L)')
    _check_tensor('delta_weight', delta_weight, (dim, rank), '(dim, R)')
    if delta_lowrank.dtype != u.dtype:
        raise TypeError(f'selective_scan_lowrank: delta_lowrank has dtype '
                        f'{delta_lowrank.dtype} but u has {u.dtype}')
    for name, t in (('delta_lowrank', delta_lowrank), ('delta_weight', delta_weight)):
        if t.device != u.device:
            raise ValueError(f'selective_scan_lowrank: {name} is on {t.device} but u is on '
                             f'{u.device}; all inputs must be on one device')
    if not cpu_kernel_applies(u.device, backend, 'fwd_lowrank'):
        from .kernels import grouped_lowrank_delta
        delta = grouped_lowrank_delta(delta_lowrank, delta_weight.to(u.dtype))
        return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                              return_last_state, backend=backend)
    # (u stands in for delta, which this path never forms: same shape, dtype, device)
    B, C = validate_inputs(u, u, A, B, C, D, z, delta_bias)
    inputs = (u, delta_lowrank, delta_weight, A, B, C, D, z, delta_bias)
    if builds_graph(inputs):
        from .kernels import SelectiveScanLowRankFn
        out, last_state = SelectiveScanLowRankFn.apply(*inputs, delta_softplus)
    else:  # no graph to build: the kernel alone (no autograd.Function round trip)
        from .kernels import lowrank_forward
        _, (out, last_state, _) = lowrank_forward(*inputs, delta_softplus)
    return (out, last_state) if return_last_state else out
