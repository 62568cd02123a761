"""mmssm.ops.bidirectional: Vim's per-direction causal conv + SiLU, fused (mmssm._C) and
composite, against a float64 reference written from the definition."""
import pytest
import torch
import torch.nn.functional as F
from cpu_runs import for_thread_counts, run_with_cpu_isa

from mmssm.ops.bidirectional import bidirectional_conv_silu, bidirectional_merge_gate
from mmssm.ops.kernels import backend_available, load_backend

needs_c = pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
# (B, D, L, K, bias): L below / equal to / not a multiple of every SIMD width, L < K,
# K = 1, D not a multiple of the 8-row work items.
CASES = [(1, 384, 197, 4, True), (2, 5, 3, 4, False), (1, 7, 1, 4, True),
         (3, 33, 17, 3, True), (2, 16, 64, 1, True), (1, 9, 40, 4, False)]


def reference(x, weight, bias):
    """float64, straight from the definition: route 0 = x, route 1 = x reversed in time;
    out[l] = silu(bias + sum_j w[j] * route[l - K + 1 + j]), zero before the start."""
    x, weight = x.double(), weight.double().reshape(weight.shape[0], -1)
    batch, dim, length = x.shape
    width = weight.shape[1]
    out = torch.zeros(batch, 2, dim, length, dtype=torch.float64)
    for k, route in enumerate((x, x.flip(-1))):
        padded = F.pad(route, (width - 1, 0))
        w = weight[k * dim:(k + 1) * dim]
        acc = torch.zeros(batch, dim, length, dtype=torch.float64)
        for j in range(width):
            acc += w[:, j, None] * padded[..., j:j + length]
        if bias is not None:
            acc += bias.double()[k * dim:(k + 1) * dim, None]
        out[:, k] = acc * torch.sigmoid(acc)
    return out


def make(batch, dim, length, width, bias, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, length, generator=gen)
    return (x, torch.randn(2 * dim, 1, width, generator=gen),
            torch.randn(2 * dim, generator=gen) if bias else None)


def assert_close(actual, expected):
    assert actual.dtype == torch.float32 and actual.is_contiguous()
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)


def count_kernel_calls(monkeypatch, entry):
    """A list that gets one item per call of mmssm._C's ``entry``."""
    module = load_backend('cpu')
    calls = []
    fused = getattr(module, entry)
    monkeypatch.setattr(module, entry, lambda *a: calls.append(1) or fused(*a),
                        raising=True)
    return calls


@needs_c
@pytest.mark.parametrize('case', CASES, ids=str)
@pytest.mark.parametrize('backend', ['cpu', 'torch'])
def test_matches_reference(case, backend):
    x, weight, bias = make(*case)
    with torch.no_grad():
        out = bidirectional_conv_silu(x, weight, bias, backend=backend)
    assert out.shape == (case[0], 2, case[1], case[2])
    assert_close(out, reference(x, weight, bias))


@needs_c
def test_strided_inputs():
    """x as a channel slice of a wider tensor (Vim's x of the in_proj output) and with a
    non-unit time stride; weight as (2D, K)."""
    x, weight, bias = make(2, 24, 50, 4, True)
    wide = torch.zeros(2, 48, 50)
    wide[:, :24] = x
    strided = torch.zeros(2, 24, 100)
    strided[..., ::2] = x
    expected = reference(x, weight, bias)
    with torch.no_grad():
        for view in (wide[:, :24], strided[..., ::2]):
            assert_close(bidirectional_conv_silu(view, weight[:, 0], bias), expected)


@needs_c
def test_dispatch(monkeypatch):
    """The fused kernel runs for CPU float32 inference and nothing else."""
    calls = count_kernel_calls(monkeypatch, 'route_conv_silu')
    x, weight, bias = make(1, 8, 20, 4, True)
    with torch.no_grad():
        bidirectional_conv_silu(x, weight, bias)
    assert calls == [1]
    # autograd needs the composite path (and gets its gradients)
    leaf = x.clone().requires_grad_(True)
    out = bidirectional_conv_silu(leaf, weight, bias)
    assert out.grad_fn is not None and len(calls) == 1
    out.sum().backward()
    assert leaf.grad is not None
    # float64, autocast, the torch backend and tracing stay composite
    with torch.no_grad():
        out64 = bidirectional_conv_silu(x.double(), weight.double(), bias.double())
        assert out64.dtype == torch.float64
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert bidirectional_conv_silu(x, weight, bias).dtype == torch.bfloat16
        bidirectional_conv_silu(x, weight, bias, backend='torch')
        torch.jit.trace(lambda t: bidirectional_conv_silu(t, weight, bias), x,
                        check_trace=False)  # (the check re-runs it eagerly)
    assert len(calls) == 1
    assert_close(out64.float(), reference(x, weight, bias))


@needs_c
@pytest.mark.parametrize('op', ['conv', 'merge'])
def test_threads_do_not_change_results(op):
    if op == 'conv':
        args, fn = make(2, 96, 197, 4, True), bidirectional_conv_silu
    else:
        args, fn = make_merge(2, 96, 197, True, 0.5), bidirectional_merge_gate
    with torch.no_grad():
        one, two = for_thread_counts(lambda: fn(*args))
    assert torch.equal(one, two)


def test_errors():
    x, weight, bias = make(1, 8, 20, 4, True)
    with pytest.raises(ValueError, match=r'x must be \(B, D, L\)'):
        bidirectional_conv_silu(x[0], weight, bias)
    with pytest.raises(ValueError, match=r'weight must be \(2\*D, 1, K\).*D = 8.*\(8, 1, 4\)'):
        bidirectional_conv_silu(x, weight[:8], bias)
    with pytest.raises(ValueError, match=r'bias must be \(16,\), got \(8,\)'):
        bidirectional_conv_silu(x, weight, bias[:8])


@needs_c
def test_kernel_errors_name_the_argument():
    fused = load_backend('cpu').route_conv_silu
    x, weight, bias = make(1, 8, 20, 4, True)
    with pytest.raises(RuntimeError, match='x must be float32'):
        fused(x.double(), weight[:, 0], bias)
    with pytest.raises(RuntimeError, match=r'weight must be \(2 \* dim, K\) = \(16, K\)'):
        fused(x, weight[:8, 0], bias)
    with pytest.raises(RuntimeError, match='bias'):
        fused(x, weight[:, 0], bias[:4])
    with pytest.raises(RuntimeError, match=r'x must be \(batch, dim, L\)'):
        fused(x[0], weight[:, 0], bias)


CHILD = r'''
import sys, torch
from mmssm.ops.bidirectional import bidirectional_conv_silu, bidirectional_merge_gate
cases, merges = torch.load(sys.argv[1])
with torch.no_grad():
    torch.save(([bidirectional_conv_silu(*case, backend='cpu') for case in cases],
                [bidirectional_merge_gate(*case, backend='cpu') for case in merges]),
               sys.argv[2])
'''


@needs_c
@pytest.mark.parametrize('isa', ['generic', 'avx2'])
def test_instruction_sets(isa, tmp_path):
    """The kernel compiled for the lower instruction sets (MMSSM_CPU_ISA, read once per
    process: a subprocess)."""
    cases = [make(*case, seed=i) for i, case in enumerate(CASES)]
    merges = [make_merge(*case, seed=i) for i, case in enumerate(MERGE_CASES)]
    convs, merged = run_with_cpu_isa(isa, CHILD, (cases, merges), tmp_path, timeout=300)
    for case, out in zip(cases, convs):
        assert_close(out, reference(*case))
    for case, out in zip(merges, merged):
        assert_close(out, merge_reference(*case))


# ---- merge + gate --------------------------------------------------------------------
# (B, D, L, gate, scale)
MERGE_CASES = [(1, 384, 197, True, 0.5), (2, 5, 3, False, 1.0), (1, 7, 1, True, 1.0),
               (3, 33, 17, True, 0.25), (2, 16, 64, False, 0.5)]


def merge_reference(ys, z, scale):
    out = (ys[:, 0].double() + ys[:, 1].double().flip(-1)) * scale
    if z is not None:
        out = out * F.silu(z.double())
    return out


def make_merge(batch, dim, length, gate, scale, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 2, dim, length, generator=gen),
            torch.randn(batch, dim, length, generator=gen) if gate else None, scale)


@needs_c
@pytest.mark.parametrize('case', MERGE_CASES, ids=str)
@pytest.mark.parametrize('backend', ['cpu', 'torch'])
def test_merge_gate_matches_reference(case, backend):
    ys, z, scale = make_merge(*case)
    with torch.no_grad():
        out = bidirectional_merge_gate(ys, z, scale, backend=backend)
    assert out.shape == (case[0], case[1], case[2])
    assert_close(out, merge_reference(ys, z, scale))


@needs_c
def test_merge_gate_dispatch_gradients_and_strided_gate(monkeypatch):
    calls = count_kernel_calls(monkeypatch, 'route_merge_gate')
    ys, z, _ = make_merge(2, 12, 30, True, 0.5)
    wide = torch.zeros(2, 24, 30)
    wide[:, 12:] = z  # z as the second half of Vim's in_proj output
    with torch.no_grad():
        assert_close(bidirectional_merge_gate(ys, wide[:, 12:], 0.5),
                     merge_reference(ys, z, 0.5))
    assert calls == [1]
    leaf_ys, leaf_z = ys.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = bidirectional_merge_gate(leaf_ys, leaf_z, 0.5)
    out.sum().backward()
    assert len(calls) == 1 and leaf_ys.grad is not None and leaf_z.grad is not None
    ref_ys, ref_z = ys.double().requires_grad_(True), z.double().requires_grad_(True)
    merge_reference(ref_ys, ref_z, 0.5).sum().backward()
    torch.testing.assert_close(leaf_z.grad.double(), ref_z.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(leaf_ys.grad.double(), ref_ys.grad, rtol=1e-5, atol=1e-5)


def test_merge_gate_errors():
    ys, z, _ = make_merge(1, 8, 20, True, 1.0)
    with pytest.raises(ValueError, match=r'ys must be \(B, 2, D, L\)'):
        bidirectional_merge_gate(ys[:, :1], z)
    with pytest.raises(ValueError, match=r'z must be \(1, 8, 20\)'):
        bidirectional_merge_gate(ys, z[..., :5])


@needs_c
def test_merge_gate_kernel_errors_name_the_argument():
    fused = load_backend('cpu').route_merge_gate
    ys, z, _ = make_merge(1, 8, 20, True, 1.0)
    with pytest.raises(RuntimeError, match='ys must be float32'):
        fused(ys.double(), z, 1.0)
    with pytest.raises(RuntimeError, match=r'ys must be \(batch, 2, dim, L\)'):
        fused(ys[0], z, 1.0)
    with pytest.raises(RuntimeError, match='z'):
        fused(ys, z[..., :4], 1.0)
