"""``selective_scan_lowrank``: the scan with delta given by its low-rank factors (the dt
projection), formed inside the CPU kernel (``mmssm._C.fwd_lowrank``), against the same
scan with delta formed by a matmul (the float64 reference and the ordinary kernel):
outputs, last state and every gradient, the fallbacks and the errors."""
import pytest
import torch
from cpu_runs import for_thread_counts, run_with_cpu_isa

from mmssm.ops import kernels, selective_scan, selective_scan_lowrank
from mmssm.ops.kernels import backend_available, grouped_lowrank_delta, load_backend

pytestmark = pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
# (L, N, G, R, dtype, gate): partial blocks (64 steps) and tiles, N = 1 / 16 / other,
# R = 1 / VMamba's 6 / Vim's 12, every dtype.
CASES = [(130, 1, 4, 6, torch.float32, False), (197, 16, 2, 12, torch.float32, True),
         (70, 5, 1, 1, torch.bfloat16, True), (40, 16, 2, 3, torch.float64, True),
         (1, 1, 4, 2, torch.float32, True)]
BATCH, DIM = 2, 40  # DIM / G is not a multiple of any SIMD width
TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (3e-2, 5e-2),
       torch.float64: (1e-10, 1e-10)}
GRAD_TOL = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-2, 1e-1),
            torch.float64: (1e-9, 1e-9)}
ARGS = ('u', 'delta_lowrank', 'delta_weight', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def make_case(seqlen, dstate, groups, rank, dtype, gate, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(*shape, dt=dtype, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(dt)

    # delta_lowrank as a row slice of a wider projection (x_proj's [dt, B, C] output)
    proj = randn(BATCH, groups, rank + 3, seqlen, scale=0.5)
    return dict(u=randn(BATCH, DIM, seqlen), delta_lowrank=proj[:, :, 1:rank + 1],
                delta_weight=randn(DIM, rank, dt=weight, scale=rank ** -0.5),
                A=(-0.5 * torch.rand(DIM, dstate, generator=gen)).to(weight),
                B=randn(BATCH, groups, dstate, seqlen), C=randn(BATCH, groups, dstate, seqlen),
                D=randn(DIM, dt=weight), z=randn(BATCH, DIM, seqlen) if gate else None,
                delta_bias=(0.5 * torch.rand(DIM, generator=gen) - 1.0).to(weight))


def run(case, fn, grad=None, **kwargs):
    leaves = {k: (None if t is None else t.detach().clone().requires_grad_(grad is not None))
              for k, t in case.items()}
    out, last = fn(**leaves, delta_softplus=True, return_last_state=True, **kwargs)
    grads = {}
    if grad is not None:
        out.backward(grad)
        grads = {k: t.grad for k, t in leaves.items() if t is not None}
    return out.detach(), last, grads


def formed(**case):
    """The same scan with delta formed by the matmul, on the ordinary 'cpu' kernel."""
    delta = grouped_lowrank_delta(case.pop('delta_lowrank'),
                                  case.pop('delta_weight').to(case['u'].dtype))
    return selective_scan(delta=delta, backend='cpu', **case)


def assert_close(name, actual, expected, tol):
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol[0], atol=tol[1],
                               msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('case', CASES, ids=str)
def test_forward_and_gradients_match_the_formed_delta(case):
    dtype = case[4]
    inputs = make_case(*case)
    grad = torch.randn(BATCH, DIM, case[0], generator=torch.Generator().manual_seed(1)).to(dtype)
    out, last, grads = run(inputs, selective_scan_lowrank, grad)
    ref_out, ref_last, ref_grads = run(inputs, formed, grad)
    assert out.dtype == dtype and last.dtype == ref_last.dtype
    assert_close('out', out, ref_out, TOL[dtype])
    assert_close('last_state', last, ref_last, TOL[dtype])
    assert set(grads) == set(ref_grads)
    for name in grads:
        assert grads[name].shape == inputs[name].shape, name
        assert grads[name].dtype == inputs[name].dtype, name
        assert_close(f'd{name}', grads[name], ref_grads[name], GRAD_TOL[dtype])


def test_gradcheck_float64():
    inputs = make_case(20, 3, 2, 4, torch.float64, True)
    names = [k for k, t in inputs.items() if t is not None]
    leaves = [inputs[k].detach().clone().requires_grad_(True) for k in names]

    def fn(*tensors):
        return selective_scan_lowrank(**dict(zip(names, tensors)), delta_softplus=True)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_the_kernel_runs_where_it_applies(monkeypatch):
    calls = []
    forward = kernels.lowrank_forward  # (inference calls it directly, training by the Fn)
    monkeypatch.setattr(kernels, 'lowrank_forward',
                        lambda *a: calls.append(1) or forward(*a))
    inputs = make_case(30, 4, 2, 3, torch.float32, True)
    with torch.no_grad():
        fused = selective_scan_lowrank(**inputs, delta_softplus=True)
        assert len(calls) == 1
        torch.testing.assert_close(selective_scan_lowrank(**inputs, backend='torch',
                                                          delta_softplus=True), fused,
                                   rtol=2e-5, atol=2e-5)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            selective_scan_lowrank(**inputs)
        torch.jit.trace(lambda u: selective_scan_lowrank(u, *list(inputs.values())[1:]),
                        inputs['u'], check_trace=False)
    assert len(calls) == 1
    # with a graph to build, the same kernel through the autograd Function
    u = inputs['u'].clone().requires_grad_()
    out = selective_scan_lowrank(**{**inputs, 'u': u}, delta_softplus=True)
    assert len(calls) == 2 and type(out.grad_fn).__name__ == 'SelectiveScanLowRankFnBackward'
    assert torch.equal(out.detach(), fused)


def test_deterministic_across_thread_counts():
    inputs = make_case(300, 16, 2, 6, torch.float32, True)
    with torch.no_grad():
        results = for_thread_counts(
            lambda: selective_scan_lowrank(**inputs, delta_softplus=True))
    assert torch.equal(*results)


@pytest.mark.parametrize('name, value, error, pattern', [
    ('delta_lowrank', torch.zeros(2, 2, 3), ValueError, r'delta_lowrank must be \(batch, G'),
    ('delta_lowrank', torch.zeros(2, 3, 3, 30), ValueError, 'not divisible by the groups G=3'),
    ('delta_lowrank', torch.zeros(2, 2, 3, 29), ValueError, r'delta_lowrank has shape'),
    ('delta_lowrank', torch.zeros(2, 2, 3, 30, dtype=torch.float64), TypeError,
     'delta_lowrank has dtype torch.float64 but u has torch.float32'),
    ('delta_weight', torch.zeros(40, 4), ValueError, r'delta_weight has shape \(40, 4\), '
                                                     r'expected \(40, 3\)'),
    ('B', torch.zeros(2, 2, 4, 29), ValueError, 'B has shape'),
])
def test_bad_inputs_name_the_argument(name, value, error, pattern):
    inputs = make_case(30, 4, 2, 3, torch.float32, True)
    inputs[name] = value
    with pytest.raises(error, match=pattern):
        selective_scan_lowrank(**inputs)


def test_binding_names_the_argument():
    inputs = make_case(30, 4, 2, 3, torch.float32, True)
    fwd = load_backend('cpu').fwd_lowrank
    args = [inputs[k] for k in ARGS]
    bad = list(args)
    bad[1] = inputs['delta_lowrank'][:, :, :2]
    with pytest.raises(RuntimeError, match='delta_lowrank'):
        fwd(*bad, True)
    bad = list(args)
    bad[2] = inputs['delta_weight'].double()
    with pytest.raises(RuntimeError, match='delta_weight'):
        fwd(*bad, True)
    bad = list(args)
    bad[2] = inputs['delta_weight'][:5]
    with pytest.raises(RuntimeError, match=r'delta_weight must be \(dim, R\) = \(40, R\)'):
        fwd(*bad, True)


CHILD = r'''
import sys, torch
from mmssm.ops import selective_scan_lowrank
cases = torch.load(sys.argv[1])
with torch.no_grad():
    torch.save([selective_scan_lowrank(**c, delta_softplus=True) for c in cases], sys.argv[2])
'''


@pytest.mark.parametrize('isa', ['generic', 'avx2'])
def test_instruction_sets(isa, tmp_path):
    """The kernel compiled for the lower instruction sets (MMSSM_CPU_ISA, read once per
    process: a subprocess)."""
    cases = [make_case(*case, seed=i) for i, case in enumerate(CASES)]
    results = run_with_cpu_isa(isa, CHILD, cases, tmp_path, timeout=300)
    for spec, case, out in zip(CASES, cases, results):
        with torch.no_grad():
            expected = formed(**case, delta_softplus=True)
        assert_close(f'{isa} {spec}', out, expected, TOL[spec[4]])


@pytest.mark.parametrize('batch, seqlen', [(0, 30), (2, 0)])
def test_empty_sizes(batch, seqlen):
    inputs = make_case(max(seqlen, 1), 4, 2, 3, torch.float32, True)
    for name in ('u', 'delta_lowrank', 'B', 'C', 'z'):
        inputs[name] = inputs[name][:batch, ..., :seqlen]
    out, last, grads = run(inputs, selective_scan_lowrank,
                           torch.zeros(batch, DIM, seqlen))
    assert out.shape == (batch, DIM, seqlen) and last.shape == (batch, DIM, 4)
    assert grads['delta_weight'].shape == (DIM, 3)
    assert not grads['delta_weight'].any()
