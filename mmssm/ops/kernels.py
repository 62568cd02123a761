"""Compiled selective-scan backends: autograd glue around ``mmssm._C`` / ``mmssm._C_cuda``.

Both extension modules expose the same two functions::

    fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        -> [out, last_state, chunk_states]
    bwd(u, delta, A, B, C, D, z, delta_bias, dout, chunk_states, delta_softplus)
        -> [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]

with ``None`` for absent optionals. This module prepares their inputs (one activation
dtype, last axis contiguous, 4-D B/C, A/D/delta_bias contiguous in the accumulation
dtype) and casts the gradients back to every input's own dtype and shape.
"""
import importlib
from typing import Optional, Tuple

import torch

from .reference import accumulation_dtype

Tensor = torch.Tensor

_MODULES = {'cpu': 'mmssm._C', 'cuda': 'mmssm._C_cuda'}
_BUILD_HINT = {
    'cpu': ('build it with `pip install --no-build-isolation -e .` (or `python setup.py '
            'build_ext --inplace`) in the mmssm checkout'),
    'cuda': ('it is built by `pip install --no-build-isolation -e .` only when torch has '
             'CUDA (torch.version.cuda) and nvcc is found (set CUDA_HOME); the build log '
             'prints one line saying why it was skipped'),
}
_loaded = {}


def load_backend(backend: str):
    """Import the extension module of ``backend`` ('cpu' or 'cuda') or raise a
    RuntimeError that says how to build it."""
    if backend in _loaded:
        return _loaded[backend]
    try:
        module = importlib.import_module(_MODULES[backend])
    except ImportError as err:
        raise RuntimeError(
            f'selective_scan: the {backend!r} backend ({_MODULES[backend]}) is not '
            f'available ({err}); {_BUILD_HINT[backend]}. Use backend=\'torch\' or '
            'MMSSM_SCAN_BACKEND=torch to run the pure-PyTorch reference instead.'
        ) from err
    _loaded[backend] = module
    return module


def backend_available(backend: str) -> bool:
    """True if the compiled ``backend`` can be imported (and, for 'cuda', a GPU is
    visible)."""
    if backend == 'torch':
        return True
    if backend == 'cuda' and not torch.cuda.is_available():
        return False
    try:
        load_backend(backend)
    except RuntimeError:
        return False
    return True


def _last_dim_contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    if t is None or t.size(-1) <= 1 or t.stride(-1) == 1:
        return t
    return t.contiguous()


def _as_acc(t: Optional[Tensor], acc: torch.dtype) -> Optional[Tensor]:
    return None if t is None else t.to(acc).contiguous()


def _cast_grad(grad: Optional[Tensor], dtype: Optional[torch.dtype]) -> Optional[Tensor]:
    if grad is None or dtype is None:
        return None
    return grad.to(dtype)


_TWICE = ("{op} on the compiled {backend!r} backend is differentiable once: its "
          'backward is a kernel without a derivative of its own, so a second backward '
          'through it (create_graph=True: gradient penalties, Hessian-vector products, '
          "double backward) is not available. Use backend='torch' (or "
          "mmssm.ops.scan_backend('torch')) for higher-order gradients.")


class _DifferentiableOnce(torch.autograd.Function):
    """Passes the gradients of the compiled backward through unchanged; differentiating
    them again raises :data:`_TWICE` (instead of torch's generic 'element 0 of tensors
    does not require grad'). ``anchor`` (a tensor of the op that requires grad)
    attaches this node to the graph under ``create_graph=True``."""

    @staticmethod
    def forward(ctx, op, backend, anchor, *grads):
        ctx.op, ctx.backend = op, backend
        return tuple(g.view_as(g) for g in grads)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(_TWICE.format(op=ctx.op, backend=ctx.backend))


def _differentiable_once(backend: str, grads: list, inputs: tuple,
                         op: str = 'selective_scan') -> list:
    """Under ``backward(create_graph=True)`` attach the compiled backward's gradients to
    the graph through :class:`_DifferentiableOnce` (anchored on an input that requires
    grad), so that differentiating them again raises :data:`_TWICE` (naming ``op``)."""
    anchors = [t for t in inputs if t is not None and t.requires_grad]
    if torch.is_grad_enabled() and anchors:
        present = [i for i, g in enumerate(grads) if g is not None]
        wrapped = _DifferentiableOnce.apply(op, backend, anchors[0],
                                            *(grads[i] for i in present))
        for i, g in zip(present, wrapped):
            grads[i] = g
    return grads


class SelectiveScanFn(torch.autograd.Function):
    """Selective scan on a compiled backend (``backend``: 'cpu' -> mmssm._C,
    'cuda' -> mmssm._C_cuda). Returns ``(out, last_state)``.

    Inputs are saved for the backward (plus the small per-chunk states the forward
    returns); the O(L * N) states are recomputed by the backward kernel. ``last_state``
    carries no gradient.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
        module = load_backend(backend)
        squeeze_bc = (B.dim() == 3, C.dim() == 3)
        B4 = B.unsqueeze(1) if squeeze_bc[0] else B
        C4 = C.unsqueeze(1) if squeeze_bc[1] else C
        acc = accumulation_dtype(u.dtype)
        args = (_last_dim_contiguous(u), _last_dim_contiguous(delta), _as_acc(A, acc),
                _last_dim_contiguous(B4), _last_dim_contiguous(C4), _as_acc(D, acc),
                _last_dim_contiguous(z), _as_acc(delta_bias, acc))
        out, last_state, chunk_states = module.fwd(*args, bool(delta_softplus))
        ctx.save_for_backward(*args, chunk_states)
        ctx.delta_softplus = bool(delta_softplus)
        ctx.module = module
        ctx.backend = backend
        ctx.squeeze_bc = squeeze_bc
        ctx.grad_dtypes = tuple(None if t is None else t.dtype
                                for t in (A, B, C, D, delta_bias))
        ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, _dlast_state):
        u, delta, A, B, C, D, z, delta_bias, chunk_states = ctx.saved_tensors
        A_dtype, B_dtype, C_dtype, D_dtype, bias_dtype = ctx.grad_dtypes
        dout = _last_dim_contiguous(dout.to(u.dtype))
        with torch.autocast(device_type=u.device.type, enabled=False):
            du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = ctx.module.bwd(
                u, delta, A, B, C, D, z, delta_bias, dout, chunk_states,
                ctx.delta_softplus)
        dB = dB.squeeze(1) if ctx.squeeze_bc[0] else dB
        dC = dC.squeeze(1) if ctx.squeeze_bc[1] else dC
        grads = [du, ddelta, _cast_grad(dA, A_dtype), _cast_grad(dB, B_dtype),
                 _cast_grad(dC, C_dtype), _cast_grad(dD, D_dtype), dz,
                 _cast_grad(ddelta_bias, bias_dtype)]
        grads = _differentiable_once(ctx.backend, grads,
                                     (dout, u, delta, A, B, C, D, z, delta_bias))
        return (*grads, None, None)


def selective_scan_kernel(backend: str, u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                          C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
                          delta_bias: Optional[Tensor], delta_softplus: bool,
                          return_last_state: bool):
    """Run the validated inputs on the compiled ``backend`` ('cpu' or 'cuda')."""
    device = u.device.type
    if backend == 'cuda':
        if u.dtype == torch.float64:
            raise TypeError("selective_scan: backend='cuda' supports float32, float16 and "
                            "bfloat16 inputs, got float64; use backend='cpu' or 'torch' "
                            'for float64')
        if device != 'cuda' and not torch.cuda.is_available():
            raise ValueError(f"selective_scan: backend='cuda' needs CUDA tensors, but u is "
                             f'on {u.device} and no CUDA device is available '
                             '(torch.cuda.is_available() is False); use backend=\'cpu\' / '
                             "None or 'torch' on this machine")
        if device != 'cuda':
            raise ValueError(f"selective_scan: backend='cuda' needs CUDA tensors, but u is "
                             f"on {u.device}; move the inputs to the GPU or use "
                             "backend='cpu' / None")
    elif backend == 'cpu':
        if device != 'cpu':
            raise ValueError(f"selective_scan: backend='cpu' needs CPU tensors, but u is "
                             f"on {u.device}; use backend='cuda' / None or move the "
                             'inputs to the CPU')
    else:
        raise ValueError(f'selective_scan: {backend!r} is not a compiled backend '
                         "(choose 'cpu' or 'cuda')")
    load_backend(backend)  # raise the build hint before autograd gets involved
    out, last_state = SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias,
                                            delta_softplus, backend)
    return (out, last_state) if return_last_state else out



def grouped_lowrank_delta(delta_lowrank: Tensor, delta_weight: Tensor) -> Tensor:
    """delta[b, d, l] = sum_r delta_weight[d, r] * delta_lowrank[b, g(d), r, l]:
    (batch, G, R, L) x (dim, R) -> (batch, dim, L), one batched matmul over the groups."""
    batch, groups, rank, length = delta_lowrank.shape
    dim = delta_weight.shape[0]
    weight = delta_weight.view(groups, dim // groups, rank)
    return torch.matmul(weight, delta_lowrank).reshape(batch, dim, length)


def lowrank_forward(u, delta_lowrank, delta_weight, A, B, C, D, z, delta_bias,
                    delta_softplus) -> Tuple[tuple, Tuple[Tensor, Tensor, Tensor]]:
    """``mmssm._C.fwd_lowrank`` on its inputs in the layouts and dtypes it reads (the
    activations' last axis contiguous, the weights in the accumulation dtype): returns
    (those inputs, (out, last_state, chunk_states)). The forward of
    :class:`SelectiveScanLowRankFn`, and the whole of an inference call (no graph)."""
    acc = accumulation_dtype(u.dtype)
    args = (_last_dim_contiguous(u), _last_dim_contiguous(delta_lowrank),
            _as_acc(delta_weight, acc), _as_acc(A, acc), _last_dim_contiguous(B),
            _last_dim_contiguous(C), _as_acc(D, acc), _last_dim_contiguous(z),
            _as_acc(delta_bias, acc))
    return args, load_backend('cpu').fwd_lowrank(*args, bool(delta_softplus))


class SelectiveScanLowRankFn(torch.autograd.Function):
    """Selective scan on the CPU kernels with delta in low-rank form (``mmssm._C``'s
    ``fwd_lowrank``: delta is formed in registers, never stored). Returns
    ``(out, last_state)``.

    The backward forms delta once (:func:`grouped_lowrank_delta`), runs the ordinary
    backward kernel and maps d delta back onto the two factors:
    ``d delta_lowrank = W_g^T d delta_g`` and ``d W_g = sum_b d delta_g delta_lowrank_g^T``.
    """

    @staticmethod
    def forward(ctx, u, delta_lowrank, delta_weight, A, B, C, D, z, delta_bias,
                delta_softplus):
        module = load_backend('cpu')
        args, (out, last_state, chunk_states) = lowrank_forward(
            u, delta_lowrank, delta_weight, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.save_for_backward(*args, chunk_states)
        ctx.delta_softplus = bool(delta_softplus)
        ctx.module = module
        ctx.grad_dtypes = tuple(None if t is None else t.dtype
                                for t in (delta_weight, A, B, C, D, delta_bias))
        ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, _dlast_state):
        u, low, weight, A, B, C, D, z, delta_bias, chunk_states = ctx.saved_tensors
        w_dtype, A_dtype, B_dtype, C_dtype, D_dtype, bias_dtype = ctx.grad_dtypes
        dout = _last_dim_contiguous(dout.to(u.dtype))
        with torch.autocast(device_type='cpu', enabled=False):
            weight_u = weight.to(u.dtype)
            delta = grouped_lowrank_delta(low, weight_u)
            du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = ctx.module.bwd(
                u, delta, A, B, C, D, z, delta_bias, dout, chunk_states,
                ctx.delta_softplus)
            batch, groups, rank, length = low.shape
            per_group = weight.shape[0] // groups
            dgrouped = ddelta.view(batch, groups, per_group, length)
            w = weight_u.view(groups, per_group, rank)
            dlow = torch.matmul(w.transpose(1, 2), dgrouped)
            dweight = torch.matmul(dgrouped, low.transpose(2, 3)).sum(0).reshape(-1, rank)
        grads = [du, dlow, _cast_grad(dweight, w_dtype), _cast_grad(dA, A_dtype),
                 _cast_grad(dB, B_dtype), _cast_grad(dC, C_dtype), _cast_grad(dD, D_dtype),
                 dz, _cast_grad(ddelta_bias, bias_dtype)]
        grads = _differentiable_once('cpu', grads,
                                     (dout, u, low, weight, A, B, C, D, z, delta_bias))
        return (*grads, None)


def route_step_rows(rows: Tensor, index: Tensor, padded: bool) -> Tensor:
    """Per-token rows (B, K, S, T) -> the same rows per route step (B, K, S, L): step l
    of route k is token ``index[k, l]``'s, zero at padding steps (-1; ``padded`` says
    whether ``index`` has any). What the routed kernels read with ``rows_by_step``
    (gathered once here instead of once per channel tile in the kernel), and the
    composite routed path's gather (differentiable)."""
    batch, routes, count, _ = rows.shape
    where = index.clamp(min=0) if padded else index
    where = where[None, :, None, :].expand(batch, routes, count, -1)
    # (gather, not take_along_dim: that one also wraps negative entries with a remainder
    # pass over the expanded index, 3-4x the time of the gather at VMamba-T's shapes)
    picked = torch.gather(rows, 3, where)
    if padded:
        picked.mul_((index >= 0)[None, :, None, :].to(rows.dtype))
    return picked


class SelectiveScanRoutesFn(torch.autograd.Function):
    """The routed scan on the CPU kernels, differentiable (``mmssm._C``'s
    ``fwd_routes_saved`` / ``bwd_routes``; float32 or float64, every tensor in ``x``'s
    dtype). Arguments as :func:`mmssm.ops.routed_scan.selective_scan_routes` (and
    ``padded``: whether ``index`` may hold padding steps); returns (B, T, E), with
    ``merge=False`` (B, K, L, E). With ``rows_by_step`` delta_lowrank / B / C are given
    per route step, (B, K, R or N, L), and their gradients are returned so.

    The forward keeps the states at the end of every chunk of steps; the backward kernel
    restarts each chunk from them, reads every route step from the token-major maps as
    the forward does and sums the input gradients of all routes onto the tokens. It
    returns the gradients of delta's two factors (``delta_lowrank``, ``delta_weight``), of
    the per-token B / C rows and of the per-channel parameters directly, so no route is
    ever gathered into a copy, in either direction.
    """

    @staticmethod
    def forward(ctx, x, index, delta_lowrank, delta_weight, A, B, C, D, delta_bias,
                delta_softplus, padded=True, merge=True, rows_by_step=False):
        module = load_backend('cpu')
        low = delta_lowrank
        if not rows_by_step:
            # the per-token rows in route order, once (``padded``: index may hold -1)
            low, B, C = (route_step_rows(t, index, bool(padded)) for t in (low, B, C))
        out, chunk_states = module.fwd_routes_saved(x, index, low, delta_weight, A, B, C, D,
                                                    delta_bias, bool(delta_softplus), True,
                                                    bool(merge))
        ctx.save_for_backward(x, index, low, delta_weight, A, B, C, D, delta_bias,
                              chunk_states)
        ctx.delta_softplus, ctx.merge = bool(delta_softplus), bool(merge)
        ctx.rows_by_step = bool(rows_by_step)
        ctx.mark_non_differentiable(index)
        return out

    @staticmethod
    def backward(ctx, dout):
        x, index, low, weight, A, B, C, D, delta_bias, chunk_states = ctx.saved_tensors
        with torch.autocast(device_type='cpu', enabled=False):
            # [dx, d delta_lowrank, d delta_weight, dA, dB, dC, dD, d delta_bias]
            grads = list(load_backend('cpu').bwd_routes(x, index, low, weight, A, B, C, D,
                                                        delta_bias, dout.to(x.dtype),
                                                        chunk_states, ctx.delta_softplus,
                                                        True, ctx.merge, ctx.rows_by_step))
        grads = _differentiable_once('cpu', grads,
                                     (dout, x, low, weight, A, B, C, D, delta_bias))
        return (grads[0], None, *grads[1:], None, None, None, None)
