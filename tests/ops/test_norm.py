"""mmssm.ops.norm.rms_norm: the fused CPU kernel (mmssm._C.rms_norm) and the composite,
against a float64 reference written from the definition."""
import pytest
import torch
from cpu_runs import for_thread_counts, run_with_cpu_isa

from mmssm.ops.kernels import backend_available, load_backend
from mmssm.ops.norm import rms_norm

needs_c = pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
# (leading shape, C): C below / equal to / between / above the SIMD widths (8, 16), a
# partial last vector after an odd number of full ones, Vim-Ti's (197, 192) tokens, no rows
CASES = [((1, 197), 192), ((2, 3), 1), ((5, ), 7), ((4, ), 8), ((3, 2), 9), ((6, ), 16),
         ((2, ), 17), ((3, ), 40), ((2, 5), 1000), ((0, 4), 12), ((), 24)]


def reference(x, weight, eps):
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


def make(lead, channels, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, channels, generator=gen) * scale,
            torch.randn(channels, generator=gen))


def assert_close(out, ref):
    assert out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=1e-6)


def count_kernel_calls(monkeypatch):
    module = load_backend('cpu')
    calls, fused = [], module.rms_norm
    monkeypatch.setattr(module, 'rms_norm', lambda *a: calls.append(1) or fused(*a))
    return calls


@needs_c
@pytest.mark.parametrize('case', CASES, ids=str)
@pytest.mark.parametrize('backend', ['cpu', 'torch'])
def test_matches_reference(case, backend):
    for seed, scale in enumerate((1.0, 1e-3, 1e3)):
        x, weight = make(*case, seed=seed, scale=scale)
        with torch.no_grad():
            out = rms_norm(x, weight, 1e-5, backend=backend)
        assert out.dtype == torch.float32
        assert_close(out, reference(x, weight, 1e-5))


@needs_c
def test_strided_inputs_and_eps(monkeypatch):
    calls = count_kernel_calls(monkeypatch)
    x, weight = make((4, 6), 40, seed=3)
    with torch.no_grad():
        for view in (x.transpose(0, 1), x[::2], x[:, 1:], x.expand(2, 4, 6, 40),
                     x.transpose(1, 2).contiguous().transpose(1, 2),  # strided C: a copy
                     x.transpose(1, 2).contiguous()[0, :, 0],  # one row, strided C
                     x.transpose(1, 2).contiguous()[:1, :, 0]):
            assert_close(rms_norm(view, weight, 1e-5), reference(view, weight, 1e-5))
        tiny = torch.full((3, 8), 1e-4)  # the mean square is below eps: eps matters
        assert_close(rms_norm(tiny, weight[:8], 1e-2), reference(tiny, weight[:8], 1e-2))
        zeros = torch.zeros(2, 9)
        assert torch.equal(rms_norm(zeros, weight[:9], 0.0).isnan(),
                           reference(zeros, weight[:9], 0.0).isnan())  # 0 / 0, as torch
    assert len(calls) == 9


@needs_c
def test_dispatch(monkeypatch):
    """The kernel runs for float32 CPU inference only; everything else takes the
    composite (gradients, other dtypes, autocast, traces, backend 'torch')."""
    calls = count_kernel_calls(monkeypatch)
    x, weight = make((3, 5), 24)
    w = weight.clone().requires_grad_()
    out = rms_norm(x, w)
    out.sum().backward()  # composite: has a graph
    ref = reference(x, weight.detach(), 1e-5)
    assert_close(out.detach(), ref)
    w64 = weight.double().requires_grad_()
    torch.autograd.gradcheck(lambda t: rms_norm(x.double(), t), (w64, ))
    with torch.no_grad():
        assert rms_norm(x.double(), weight.double()).dtype == torch.float64
        assert rms_norm(x.half(), weight.half()).dtype == torch.float32
        assert rms_norm(x.bfloat16(), weight).dtype == torch.float32
        with torch.autocast('cpu', dtype=torch.bfloat16):
            rms_norm(x, weight)
        rms_norm(x, weight, backend='torch')
        torch.jit.trace(lambda t: rms_norm(t, weight), x, check_trace=False)
    assert calls == []
    with torch.no_grad():
        rms_norm(x, weight)
    assert calls == [1]


@needs_c
def test_threads_do_not_change_results():
    x, weight = make((4, 197), 384)
    with torch.no_grad():
        one, two = for_thread_counts(lambda: rms_norm(x, weight))
    assert torch.equal(one, two)


def test_errors():
    x, weight = make((2, ), 8)
    with pytest.raises(ValueError, match=r'weight must be \(8,\).*got \(4,\)'):
        rms_norm(x, weight[:4])
    with pytest.raises(ValueError, match=r'x must be a \(\.\.\., C\) tensor'):
        rms_norm(torch.tensor(1.0), weight)
    with pytest.raises(ValueError, match='eps must be finite and >= 0'):
        rms_norm(x, weight, -1e-5)
    with pytest.raises(ValueError, match='eps must be finite and >= 0'):
        rms_norm(x, weight, float('nan'))
    with pytest.raises(ValueError, match='weight is on meta'):
        rms_norm(x, weight.to('meta'))


@needs_c
def test_kernel_errors_name_the_argument():
    fused = load_backend('cpu').rms_norm
    x, weight = make((2, ), 8)
    with pytest.raises(RuntimeError, match='x must be float32'):
        fused(x.double(), weight, 1e-5)
    with pytest.raises(RuntimeError, match='weight must be float32'):
        fused(x, weight.double(), 1e-5)
    with pytest.raises(RuntimeError, match=r'weight must be \(8,\)'):
        fused(x, weight[:3], 1e-5)
    with pytest.raises(RuntimeError, match='eps must be finite'):
        fused(x, weight, float('inf'))
    with pytest.raises(RuntimeError, match=r'x must be \(\.\.\., C\)'):
        fused(torch.tensor(1.0), weight, 1e-5)


CHILD = r'''
import sys, torch
from mmssm.ops.norm import rms_norm
cases = torch.load(sys.argv[1])
with torch.no_grad():
    torch.save([rms_norm(x, w, 1e-5, backend='cpu') for x, w in cases], sys.argv[2])
'''


@needs_c
@pytest.mark.parametrize('isa', ['generic', 'avx2'])
def test_instruction_sets(isa, tmp_path):
    """The kernel compiled for the lower instruction sets (MMSSM_CPU_ISA, read once per
    process: a subprocess)."""
    cases = [make(*case, seed=i) for i, case in enumerate(CASES)]
    for (x, weight), out in zip(cases, run_with_cpu_isa(isa, CHILD, cases, tmp_path)):
        assert_close(out, reference(x, weight, 1e-5))
