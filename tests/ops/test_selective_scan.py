"""The selective-scan op: compiled backends against the float64 reference.

* Correctness of the 'cpu' backend (and of 'cuda' where a GPU and mmssm._C_cuda exist;
  skipped otherwise) against ``selective_scan_reference`` run in float64 on the same
  (rounded) inputs: outputs, last state and every gradient, with mamba's tolerance table
  (shared/specs/selective_scan.md §3.1).
  - a full sweep of the cheap option axes (D, z, delta_bias, softplus) x N x dtype at one
    small shape that crosses a block boundary;
  - a pairwise covering design over all axes (L, N, G, D, z, delta_bias, softplus,
    return_last_state, dtype): every value of every axis meets every value of every
    other axis at least once.
* float64 ``gradcheck`` of the 'cpu' and 'torch' backends.
* Strided / transposed / expanded inputs give bit-identical results to contiguous ones.
* Determinism (bit-identical for any thread count), the chunk-state restart, autocast,
  gradient dtypes / shapes, and bad inputs (the error names the argument).
"""
import itertools
import os
import random

import pytest
import torch

from mmssm.ops import (kernels, resolve_backend, scan_backend, selective_scan,
                       selective_scan_reference)
from mmssm.ops.kernels import SelectiveScanFn, backend_available

SEQLENS = (1, 7, 64, 257, 1024, 3136)
DSTATES = (1, 4, 16)
GROUPS = (1, 2, 4)
DTYPES = (torch.float32, torch.bfloat16)
BATCH, DIM = 2, 12  # DIM % 8 != 0: partial N == 1 tiles; divisible by every G

# spec §3.1 (mamba's test): base tolerance per input dtype, weights tolerance.
BASE_TOL = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3),
            torch.bfloat16: (3e-2, 5e-2)}
WEIGHT_TOL = (1e-3, 1e-3)

DEVICES = [pytest.param('cpu', id='cpu'),
           pytest.param('cuda', id='cuda', marks=pytest.mark.cuda)]


def require_backend(device: str) -> None:
    if device == 'cuda' and not (torch.cuda.is_available() and backend_available('cuda')):
        pytest.skip('needs a CUDA device and the mmssm._C_cuda extension')


# ---------------------------------------------------------------------------------------
# helpers


def make_inputs(seqlen, dstate, groups, dtype, has_D=True, has_z=True, has_bias=True,
                batch=BATCH, dim=DIM, seed=0):
    """mamba's test distributions: A = -0.5 U(0,1); u, B, C, D, z ~ N(0,1);
    delta, delta_bias = 0.5 U(0,1). Activations in ``dtype``, weights in fp32."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    return dict(
        u=randn(batch, dim, seqlen).to(dtype),
        delta=(0.5 * rand(batch, dim, seqlen)).to(dtype),
        A=-0.5 * rand(dim, dstate),
        B=randn(batch, groups, dstate, seqlen).to(dtype),
        C=randn(batch, groups, dstate, seqlen).to(dtype),
        D=randn(dim) if has_D else None,
        z=randn(batch, dim, seqlen).to(dtype) if has_z else None,
        delta_bias=0.5 * rand(dim) if has_bias else None,
    )


def leaves(inputs, device=None, dtype=None):
    """Fresh leaf tensors requiring grad (optionally moved / cast)."""
    out = {}
    for name, t in inputs.items():
        if t is not None:
            t = t.detach().to(device=device or t.device, dtype=dtype or t.dtype)
            t.requires_grad_(True)
        out[name] = t
    return out


def run(inputs, backend, delta_softplus, return_last_state, grad_out):
    out = selective_scan(**inputs, delta_softplus=delta_softplus,
                         return_last_state=return_last_state, backend=backend)
    out, last = out if return_last_state else (out, None)
    out.backward(grad_out.to(out.dtype))
    grads = {k: (None if t is None else t.grad) for k, t in inputs.items()}
    return out, last, grads


def assert_close(name, actual, expected, rtol, atol):
    assert actual is not None and expected is not None, f'{name}: missing tensor'
    assert actual.shape == expected.shape, f'{name}: shape {tuple(actual.shape)} vs ' \
                                           f'{tuple(expected.shape)}'
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    excess = (a - e).abs() - (atol + rtol * e.abs())
    worst = excess.max().item() if excess.numel() else 0.0
    assert worst <= 0, (f'{name}: |actual - expected| exceeds atol={atol} + rtol={rtol} * '
                        f'|expected| by {worst:.3g} (max abs diff '
                        f'{(a - e).abs().max().item():.3g}, max |expected| '
                        f'{e.abs().max().item():.3g})')


def check_against_reference(device, seqlen, dstate, groups, dtype, has_D, has_z, has_bias,
                            delta_softplus, return_last_state, seed=0):
    require_backend(device)
    inputs = make_inputs(seqlen, dstate, groups, dtype, has_D, has_z, has_bias, seed=seed)
    # the upstream gradient arrives in the output dtype: both sides get the same values
    grad_out = torch.randn(BATCH, DIM, seqlen,
                           generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    ref_in = leaves(inputs, dtype=torch.float64)
    ker_in = leaves(inputs, device=device)
    ref_out, ref_last, ref_grads = run(ref_in, 'torch', delta_softplus, True,
                                       grad_out.double())
    out, last, grads = run(ker_in, device, delta_softplus, return_last_state,
                           grad_out.to(device))

    rtol, atol = BASE_TOL[dtype]
    wrtol, watol = WEIGHT_TOL
    if has_z:
        wrtol, watol = max(wrtol, rtol), max(watol, atol)
    assert out.dtype == dtype and out.device.type == device
    assert_close('out', out, ref_out, rtol, atol)
    if return_last_state:
        assert last.dtype == torch.float32 and not last.requires_grad
        assert_close('last_state', last, ref_last, rtol, atol)
    tolerances = {
        'u': (2 * rtol, 2 * atol), 'delta': (5 * rtol, 10 * atol), 'A': (wrtol, 5 * watol),
        'B': (rtol, atol), 'C': (rtol, atol), 'D': (wrtol, watol), 'z': (wrtol, watol),
        'delta_bias': (wrtol, watol),
    }
    for name, (gr, ga) in tolerances.items():
        if ker_in[name] is None:
            continue
        assert grads[name].dtype == ker_in[name].dtype, f'd{name} dtype'
        assert_close(f'd{name}', grads[name], ref_grads[name], gr, ga)


# ---------------------------------------------------------------------------------------
# pairwise covering design


def pairwise_cases(axes, seed=0, candidates=40):
    """Greedy (AETG-style) covering array: a list of cases (dicts) such that every pair
    of values of every two axes occurs in at least one case. Deterministic."""
    names = list(axes)
    rng = random.Random(seed)
    uncovered = {((a, va), (b, vb))
                 for a, b in itertools.combinations(names, 2)
                 for va in axes[a] for vb in axes[b]}

    def pairs_of(case):
        return {((a, case[a]), (b, case[b])) for a, b in itertools.combinations(names, 2)}

    cases = []
    while uncovered:
        first = sorted(uncovered, key=repr)[0]
        best, best_gain = None, -1
        for _ in range(candidates):
            (a, va), (b, vb) = first
            case = {a: va, b: vb}
            rest = [n for n in names if n not in case]
            rng.shuffle(rest)
            for name in rest:
                def gain(value):
                    return sum(((n, case[n]), (name, value)) in uncovered or
                               ((name, value), (n, case[n])) in uncovered for n in case)
                values = list(axes[name])
                rng.shuffle(values)
                case[name] = max(values, key=gain)
            covered = len(pairs_of(case) & uncovered)
            if covered > best_gain:
                best, best_gain = dict(case), covered
        uncovered -= pairs_of(best)
        cases.append(best)
    return [{n: case[n] for n in names} for case in cases]


COVERING_AXES = {
    'seqlen': SEQLENS,
    'dstate': DSTATES,
    'groups': GROUPS,
    'dtype': DTYPES,
    'has_D': (False, True),
    'has_z': (False, True),
    'has_bias': (False, True),
    'delta_softplus': (False, True),
    'return_last_state': (False, True),
}
COVERING_CASES = pairwise_cases(COVERING_AXES)


def _case_id(case):
    flags = ''.join(k[0] if case[f'has_{k}'] else '-' for k in ('D', 'z', 'bias'))
    return (f"L{case['seqlen']}-N{case['dstate']}-G{case['groups']}-"
            f"{str(case['dtype']).split('.')[-1]}-{flags}"
            f"{'-sp' if case['delta_softplus'] else ''}"
            f"{'-last' if case['return_last_state'] else ''}")


def test_covering_design_is_pairwise():
    names = list(COVERING_AXES)
    for a, b in itertools.combinations(names, 2):
        seen = {(case[a], case[b]) for case in COVERING_CASES}
        for va, vb in itertools.product(COVERING_AXES[a], COVERING_AXES[b]):
            assert (va, vb) in seen, f'pair {a}={va}, {b}={vb} is not covered'
    assert len(COVERING_CASES) <= 30


@pytest.mark.parametrize('case', COVERING_CASES, ids=[_case_id(c) for c in COVERING_CASES])
@pytest.mark.parametrize('device', DEVICES)
def test_pairwise_vs_reference(device, case):
    check_against_reference(device, **case)


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: str(d).split('.')[-1])
@pytest.mark.parametrize('dstate', DSTATES)
@pytest.mark.parametrize('has_D, has_z, has_bias, delta_softplus',
                         list(itertools.product((False, True), repeat=4)),
                         ids=lambda v: 'T' if v else 'F')
@pytest.mark.parametrize('device', DEVICES)
def test_option_sweep_vs_reference(device, has_D, has_z, has_bias, delta_softplus, dstate,
                                   dtype):
    # L = 70 crosses one 64-step block of the CPU kernel; G = 2.
    check_against_reference(device, 70, dstate, 2, dtype, has_D, has_z, has_bias,
                            delta_softplus, return_last_state=True)


@pytest.mark.parametrize('device', DEVICES)
def test_float16_vs_reference(device):
    for dstate in (1, 16):
        check_against_reference(device, 200, dstate, 2, torch.float16, True, True, True,
                                True, True)


@pytest.mark.parametrize('device', DEVICES)
def test_softplus_threshold(device):
    """delta + bias around and above torch's softplus threshold (20)."""
    require_backend(device)
    inputs = make_inputs(40, 4, 1, torch.float32)
    raw = torch.linspace(15.0, 25.0, 40).expand(BATCH, DIM, 40).clone()
    inputs['delta'] = raw - inputs['delta_bias'][None, :, None]
    inputs['A'] = -0.05 * torch.rand(DIM, 4)  # keep exp(dt * A) away from 0
    grad_out = torch.randn(BATCH, DIM, 40)
    ref_out, _, ref_grads = run(leaves(inputs, dtype=torch.float64), 'torch', True, False,
                                grad_out.double())
    out, _, grads = run(leaves(inputs, device=device), device, True, False,
                        grad_out.to(device))
    rtol, atol = BASE_TOL[torch.float32]
    assert_close('out', out, ref_out, rtol, atol)
    assert_close('ddelta', grads['delta'], ref_grads['delta'], 5 * rtol, 10 * atol)
    assert_close('ddelta_bias', grads['delta_bias'], ref_grads['delta_bias'], rtol, atol)


@pytest.mark.slow
@pytest.mark.parametrize('device', DEVICES)
def test_long_sequence_vs_reference(device):
    check_against_reference(device, 16384, 1, 4, torch.float32, True, False, True, True,
                            True)
    check_against_reference(device, 4096, 16, 1, torch.bfloat16, True, True, True, True,
                            True)


# ---------------------------------------------------------------------------------------
# gradcheck (float64)


@pytest.mark.parametrize('backend, seqlen, dstate, groups', [
    ('cpu', 70, 1, 2),    # N == 1 tiles, two blocks
    ('cpu', 70, 3, 1),    # runtime-N path
    ('cpu', 9, 16, 2),    # N == 16 path
    ('torch', 5, 2, 2),
])
def test_gradcheck_float64(backend, seqlen, dstate, groups):
    inputs = make_inputs(seqlen, dstate, groups, torch.float64, batch=1, dim=4)
    args = leaves({k: (None if v is None else v.double()) for k, v in inputs.items()})
    names = list(args)

    def fn(*tensors):
        return selective_scan(**dict(zip(names, tensors)), delta_softplus=True,
                              backend=backend)

    assert torch.autograd.gradcheck(fn, tuple(args.values()), eps=1e-6, atol=1e-6,
                                    rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize('device', DEVICES)
def test_double_backward_through_the_compiled_op_is_a_clear_error(device):
    """The compiled kernels are differentiable once. A second backward names that and
    the way out, instead of torch's 'element 0 of tensors does not require grad';
    first-order gradients under create_graph=True are unchanged."""
    require_backend(device)
    args = leaves(make_inputs(9, 4, 1, torch.float32, batch=1, dim=4), device=device)
    first, = torch.autograd.grad(selective_scan(**args).sum(), args['u'], create_graph=True)
    plain = leaves(args)
    expected, = torch.autograd.grad(selective_scan(**plain).sum(), plain['u'])
    torch.testing.assert_close(first, expected)
    with pytest.raises(RuntimeError, match="differentiable once.*backend='torch'"):
        first.pow(2).sum().backward()


def test_double_backward_through_the_torch_backend():
    args = leaves(make_inputs(5, 2, 1, torch.float64, batch=1, dim=2), dtype=torch.float64)
    names = list(args)

    def fn(*tensors):
        return selective_scan(**dict(zip(names, tensors)), backend='torch')

    assert torch.autograd.gradgradcheck(fn, tuple(args.values()), eps=1e-6, atol=1e-5,
                                        rtol=1e-4, fast_mode=True)


def test_float64_cpu_matches_reference_exactly_enough():
    inputs = make_inputs(300, 16, 4, torch.float64)
    inputs = {k: (None if v is None else v.double()) for k, v in inputs.items()}
    out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True,
                               backend='cpu')
    ref, ref_last = selective_scan_reference(**inputs, delta_softplus=True,
                                             return_last_state=True)
    assert out.dtype == last.dtype == torch.float64
    assert_close('out', out, ref, 1e-10, 1e-10)
    assert_close('last_state', last, ref_last, 1e-10, 1e-10)


# ---------------------------------------------------------------------------------------
# layouts, determinism, chunk states


def _strided_copy(t, kind):
    """A non-contiguous tensor equal to t."""
    if kind == 'transposed':  # last-dim stride != 1
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == 'padded':  # stride(-1) == 1 but rows further apart
        pad = torch.zeros(*t.shape[:-1], t.shape[-1] + 5, dtype=t.dtype)
        pad[..., :t.shape[-1]] = t
        return pad[..., :t.shape[-1]]
    if kind == 'every_other':  # stride(-1) == 2
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    raise KeyError(kind)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16],
                         ids=lambda d: str(d).split('.')[-1])
@pytest.mark.parametrize('dstate', [1, 16, 5])
@pytest.mark.parametrize('kind', ['transposed', 'padded', 'every_other'])
@pytest.mark.parametrize('device', DEVICES)
def test_non_contiguous_inputs_bit_identical(device, kind, dstate, dtype):
    require_backend(device)
    inputs = make_inputs(150, dstate, 2, dtype)
    grad_out = torch.randn(BATCH, DIM, 150)
    ref_out, ref_last, ref_grads = run(leaves(inputs, device=device), device, True, True,
                                       grad_out.to(device))
    strided = {}
    for name, t in inputs.items():
        if t is not None and t.dim() >= 2:
            t = _strided_copy(t, kind)
        strided[name] = None if t is None else t.to(device)
    if kind == 'padded':  # B / C as channel slices of one x_dbl-like tensor
        xdbl = torch.cat([torch.zeros_like(inputs['B'][:, :, :1]), inputs['B'],
                          inputs['C']], dim=2)
        strided['B'] = xdbl[:, :, 1:1 + dstate].to(device)
        strided['C'] = xdbl[:, :, 1 + dstate:].to(device)
        assert not strided['B'].is_contiguous()
    leaves_in = {}
    for name, t in strided.items():
        if t is not None:
            t.requires_grad_(True)  # non-leaf views would not keep .grad
        leaves_in[name] = t
    out, last, grads = run(leaves_in, device, True, True, grad_out.to(device))
    assert torch.equal(out, ref_out) and torch.equal(last, ref_last)
    for name, g in grads.items():
        if g is not None:
            assert torch.equal(g, ref_grads[name]), f'd{name} differs for {kind} inputs'


def test_expanded_and_3d_inputs():
    """B / C broadcast over the batch (stride 0) and given as (batch, N, L)."""
    inputs = make_inputs(90, 4, 1, torch.float32)
    B1 = inputs['B'][:1].squeeze(1)  # (1, N, L)
    inputs['B'] = B1.expand(BATCH, -1, -1)  # 3-D, batch stride 0
    inputs['C'] = inputs['C'][:, 0]  # 3-D
    dense = {k: (None if v is None else v.contiguous()) for k, v in inputs.items()}
    grad_out = torch.randn(BATCH, DIM, 90)
    out, _, grads = run(leaves(inputs), 'cpu', False, False, grad_out)
    ref_out, _, ref_grads = run(leaves(dense), 'cpu', False, False, grad_out)
    assert torch.equal(out, ref_out)
    assert grads['B'].shape == (BATCH, 4, 90) and grads['C'].shape == (BATCH, 4, 90)
    for name in grads:
        if grads[name] is not None:
            assert torch.equal(grads[name], ref_grads[name]), name


def test_function_accepts_3d_bc_directly():
    inputs = make_inputs(20, 3, 1, torch.float32)
    B = inputs['B'][:, 0].clone().requires_grad_(True)
    C = inputs['C'][:, 0].clone().requires_grad_(True)
    out, last = SelectiveScanFn.apply(inputs['u'], inputs['delta'], inputs['A'], B, C,
                                      None, None, None, True, 'cpu')
    out.sum().backward()
    assert B.grad.shape == B.shape and C.grad.shape == C.shape
    assert last.shape == (BATCH, DIM, 3) and not last.requires_grad


@pytest.mark.parametrize('dstate, groups', [(1, 4), (16, 1), (5, 2)])
def test_deterministic_across_thread_counts(dstate, groups):
    inputs = make_inputs(300, dstate, groups, torch.float32, batch=3, dim=24)
    grad_out = torch.randn(3, 24, 300)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(run(leaves(inputs), 'cpu', True, True, grad_out))
    finally:
        torch.set_num_threads(threads)
    first = results[0]
    for other in results[1:]:
        assert torch.equal(first[0], other[0]) and torch.equal(first[1], other[1])
        for name, g in first[2].items():
            if g is not None:
                assert torch.equal(g, other[2][name]), f'd{name} depends on the threads'


@pytest.mark.parametrize('dstate', [1, 16, 3])
def test_chunk_states_restart_equals_recompute(dstate):
    """bwd from the forward's chunk states == bwd recomputing them (bit-identical)."""
    from mmssm import _C
    inputs = make_inputs(200, dstate, 2, torch.float32)
    args = [inputs[k] for k in ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')]
    out, last, chunks = _C.fwd(*args, True)
    n_chunks = -(-200 // _C.chunk_size)
    assert chunks.shape == (BATCH, DIM, n_chunks, dstate)
    assert torch.equal(chunks[:, :, -1], last)
    dout = torch.randn_like(out)
    with_states = _C.bwd(*args, dout, chunks, True)
    recomputed = _C.bwd(*args, dout, torch.empty(0), True)
    none_given = _C.bwd(*args, dout, None, True)
    for a, b, c in zip(with_states, recomputed, none_given):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_backward_saves_no_per_step_states():
    inputs = leaves(make_inputs(640, 16, 2, torch.float32))
    out = selective_scan(**inputs, backend='cpu')
    saved = sum(t.numel() for t in out.grad_fn.saved_tensors if t is not None)
    activations = sum(t.numel() for t in inputs.values() if t is not None)
    per_chunk = BATCH * DIM * (640 // 64) * 16
    assert saved <= activations + per_chunk  # no (batch, dim, L, N) tensor


@pytest.mark.parametrize('dstate', [1, 16])
def test_many_groups_single_slice(dstate):
    """batch * G >= 128: one channel slice per (batch, group); for N == 1 the kernel then
    accumulates dB / dC in place."""
    inputs = make_inputs(20, dstate, 4, torch.float32, batch=32, dim=8)
    grad_out = torch.randn(32, 8, 20)
    ref_out, _, ref_grads = run(leaves(inputs, dtype=torch.float64), 'torch', True, False,
                                grad_out.double())
    out, _, grads = run(leaves(inputs), 'cpu', True, False, grad_out)
    rtol, atol = BASE_TOL[torch.float32]
    assert_close('out', out, ref_out, rtol, atol)
    for name in ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias'):
        assert_close(f'd{name}', grads[name], ref_grads[name], 5 * rtol, 10 * atol)


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_traced_graph_names_the_function():
    """The FLOPs counter matches the traced node prim::PythonOp named SelectiveScanFn."""
    inputs = make_inputs(10, 2, 2, torch.float32, has_z=False)

    def scan(u, delta, A, B, C):
        return selective_scan(u, delta, A, B, C, delta_softplus=True, backend='cpu')

    args = tuple(inputs[k] for k in ('u', 'delta', 'A', 'B', 'C'))
    traced = torch.jit.trace(scan, args, check_trace=False)
    ops = [n for n in traced.graph.nodes() if n.kind() == 'prim::PythonOp']
    assert [n.pyname() for n in ops] == ['SelectiveScanFn']
    assert torch.equal(traced(*args), scan(*args))


def test_empty_sizes():
    for batch, seqlen in ((0, 10), (2, 0)):
        inputs = leaves(make_inputs(seqlen, 4, 2, torch.float32, batch=batch))
        out, last = selective_scan(**inputs, return_last_state=True, backend='cpu')
        ref, ref_last = selective_scan_reference(**inputs, return_last_state=True)
        assert out.shape == ref.shape and torch.equal(last, ref_last)
        out.sum().backward()
        assert inputs['A'].grad is not None and torch.all(inputs['A'].grad == 0)


# ---------------------------------------------------------------------------------------
# dtypes of gradients, autocast


def test_gradient_dtypes_follow_inputs():
    inputs = make_inputs(33, 4, 2, torch.bfloat16)
    inputs['A'] = inputs['A'].double()
    inputs['D'] = inputs['D'].half()
    inputs['delta_bias'] = inputs['delta_bias'].bfloat16()
    args = leaves(inputs)
    out = selective_scan(**args, delta_softplus=True, backend='cpu')
    out.float().sum().backward()
    for name, t in args.items():
        assert t.grad.dtype == t.dtype and t.grad.shape == t.shape, name


def test_autocast_mixed_activation_dtypes():
    inputs = make_inputs(50, 4, 2, torch.float32)
    mixed = dict(inputs, u=inputs['u'].bfloat16(), z=inputs['z'].bfloat16())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = selective_scan(**mixed, delta_softplus=True, backend='cpu')
        same = selective_scan(**inputs, delta_softplus=True, backend='cpu')
    assert out.dtype == torch.bfloat16 and same.dtype == torch.float32
    as_bf16 = {k: (v.bfloat16() if k in ('u', 'delta', 'B', 'C', 'z') else v)
               for k, v in inputs.items()}
    expected = selective_scan(**as_bf16, delta_softplus=True, backend='cpu')
    assert torch.equal(out, expected)
    assert torch.equal(same, selective_scan(**inputs, delta_softplus=True, backend='cpu'))


# ---------------------------------------------------------------------------------------
# bad input


def _good():
    return make_inputs(16, 4, 2, torch.float32)


@pytest.mark.parametrize('name, value, error, pattern', [
    ('u', torch.zeros(2, 12), ValueError, r'u must be \(batch, dim, L\)'),
    ('delta', torch.zeros(2, 12, 15), ValueError, r'delta has shape \(2, 12, 15\)'),
    ('A', torch.zeros(12), ValueError, r'A must be \(dim, N\)'),
    ('A', torch.zeros(11, 4), ValueError, r'A has shape \(11, 4\)'),
    ('B', torch.zeros(2, 2), ValueError, r'B must be \(batch, G, N, L\)'),
    ('B', torch.zeros(2, 3, 16), ValueError, r'B has shape \(2, 3, 16\), expected '
                                             r'\(2, 4, 16\)'),
    ('B', torch.zeros(2, 2, 5, 16), ValueError, r'B has shape \(2, 2, 5, 16\)'),
    ('C', torch.zeros(2, 1, 4, 16), ValueError, r'C has shape \(2, 1, 4, 16\)'),
    ('D', torch.zeros(11), ValueError, r'D has shape \(11,\)'),
    ('z', torch.zeros(2, 12, 17), ValueError, r'z has shape'),
    ('delta_bias', torch.zeros(2, 12), ValueError, r'delta_bias must have 1 dims'),
    ('delta', torch.zeros(2, 12, 16, dtype=torch.float16), TypeError, r'delta has dtype'),
    ('B', torch.zeros(2, 2, 4, 16, dtype=torch.int32), TypeError,
     r'B must be a floating-point tensor'),
    ('u', torch.zeros(2, 12, 16, dtype=torch.int64), TypeError, r'u has dtype'),
    ('C', [[1.0]], ValueError, r'C must be \(batch, G, N, L\)'),
    ('delta', torch.zeros(2, 12, 16, device='meta'), ValueError, r'delta is on meta'),
])
def test_bad_inputs_name_the_argument(name, value, error, pattern):
    inputs = dict(_good(), **{name: value})
    with pytest.raises(error, match=pattern):
        selective_scan(**inputs, backend='cpu')


def test_dim_not_divisible_by_groups():
    inputs = make_inputs(16, 4, 5, torch.float32)
    with pytest.raises(ValueError, match=r'dim=12 .* not divisible .* G=5'):
        selective_scan(**inputs, backend='cpu')


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"unknown backend 'triton'"):
        selective_scan(**_good(), backend='triton')


def test_backend_device_mismatch_and_fp64_cuda():
    with pytest.raises(ValueError, match=r"backend='cuda' needs CUDA tensors"):
        selective_scan(**_good(), backend='cuda')
    inputs = {k: (None if v is None else v.double()) for k, v in _good().items()}
    with pytest.raises(TypeError, match=r"backend='cuda' supports float32, float16 and "
                                        r'bfloat16 inputs, got float64'):
        selective_scan(**inputs, backend='cuda')


def test_missing_backend_says_how_to_build(monkeypatch):
    def fail(name):
        raise ImportError(f'No module named {name!r}')

    monkeypatch.setattr(kernels, '_loaded', {})
    monkeypatch.setattr(kernels.importlib, 'import_module', fail)
    with pytest.raises(RuntimeError, match=r'pip install --no-build-isolation -e \.'):
        selective_scan(**_good(), backend='cpu')
    assert not backend_available('cpu')


def test_env_var_selects_backend(monkeypatch):
    monkeypatch.setenv('MMSSM_SCAN_BACKEND', 'torch')
    inputs = _good()
    out = selective_scan(**inputs)
    assert torch.equal(out, selective_scan_reference(**inputs))


def test_scan_backend_block_selects_the_backend(monkeypatch):
    monkeypatch.delenv('MMSSM_SCAN_BACKEND', raising=False)
    cpu = torch.device('cpu')
    inputs = _good()
    assert resolve_backend(None, cpu) == 'cpu'
    with scan_backend('torch'):
        assert resolve_backend(None, cpu) == 'torch'
        assert resolve_backend('cpu', cpu) == 'cpu'  # an explicit backend wins
        assert 'MMSSM_SCAN_BACKEND' not in os.environ  # no process-wide side effect
        with scan_backend('cpu'):  # blocks nest
            assert resolve_backend(None, cpu) == 'cpu'
        assert torch.equal(selective_scan(**inputs), selective_scan_reference(**inputs))
    assert resolve_backend(None, cpu) == 'cpu'
    monkeypatch.setenv('MMSSM_SCAN_BACKEND', 'torch')
    with scan_backend('cpu'):  # the block wins over the environment
        assert resolve_backend(None, cpu) == 'cpu'
    assert resolve_backend('auto', cpu) == ('cpu' if backend_available('cpu') else 'torch')
    with pytest.raises(ValueError, match="cannot run a model on cpu"):
        resolve_backend('cuda', cpu, check_available=True)
    with pytest.raises(ValueError, match="unknown backend 'auto'"):
        with scan_backend('auto'):
            pass


def test_opaque_reference_is_one_forward_only_node():
    inputs = {k: (v.requires_grad_() if v is not None else v) for k, v in _good().items()}
    with scan_backend('torch', opaque_reference=True):
        out = selective_scan(**inputs)
    assert out.grad_fn.name().endswith('SelectiveScanReferenceBackward')
    with torch.no_grad():
        assert torch.equal(out, selective_scan_reference(**inputs))
    with pytest.raises(RuntimeError, match='forward-only'):
        out.sum().backward()


@pytest.mark.parametrize('fn, index, value, pattern', [
    ('fwd', 2, torch.zeros(12, 4, dtype=torch.float64), r'A has dtype Double'),
    ('fwd', 3, torch.zeros(2, 4, 16), r'B must be \(batch, G, N, L\)'),
    ('fwd', 4, torch.zeros(2, 2, 4, 15), r'C has shape \(2, 2, 4, 15\), expected '
                                         r'\(2, 2, 4, 16\)'),
    ('fwd', 5, torch.zeros(12, dtype=torch.float16), r'D has dtype Half'),
    ('fwd', 7, torch.zeros(13), r'delta_bias has shape \(13,\)'),
    ('bwd', 8, torch.zeros(2, 12, 15), r'dout has shape'),
    ('bwd', 9, torch.zeros(2, 12, 3, 4), r'chunk_states has shape'),
])
def test_binding_validates_arguments(fn, index, value, pattern):
    from mmssm import _C
    inputs = _good()
    args = [inputs[k] for k in ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')]
    if fn == 'bwd':
        args += [torch.zeros(2, 12, 16), torch.empty(0)]
    args[index] = value
    with pytest.raises(RuntimeError, match=pattern):
        getattr(_C, fn)(*args, True)
