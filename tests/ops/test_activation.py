"""mmssm.ops.activation.gelu: the CPU kernel (mmssm._C.gelu / gelu_backward) and the
composite F.gelu, against float64 references written from the definition
(x Phi(x), Phi + x phi)."""
import math

import pytest
import torch
import torch.nn.functional as F
from cpu_runs import for_thread_counts, run_with_cpu_isa

from mmssm.ops.activation import gelu, gelu_
from mmssm.ops.kernels import backend_available, load_backend
from mmssm.ops.linear import linear

needs_c = pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')


def cdf(x):
    return 0.5 * torch.special.erfc(-x / math.sqrt(2))


def reference(x):
    x = x.double()
    return x * cdf(x)


def reference_grad(grad, x):
    x = x.double()
    return grad.double() * (cdf(x) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))


def grid(n=200_003):
    """Dense in [-14, 14] (past where Phi leaves (0, 1) in float32), an odd length: a
    partial last vector after full blocks of four."""
    return torch.linspace(-14, 14, n)


def scale(x, grad=None):
    """max(1, |x|) (times |grad| for a gradient): GELU's absolute error grows with |x|,
    as x's own rounding does."""
    s = x.double().abs().clamp_min(1)
    return s if grad is None else s * grad.double().abs()


def assert_error_below(out, ref, scale, bound):
    """|out - ref| <= bound * scale everywhere."""
    err = (out.double() - ref).abs() / scale
    assert err.max().item() <= bound, f'max scaled error {err.max().item():.3g}'


@needs_c
def test_kernel_matches_the_definition():
    kernel = load_backend('cpu')
    x = grid()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out = kernel.gelu(x)
    assert_error_below(out, reference(x), scale(x), 2e-7)
    assert_error_below(kernel.gelu_backward(g, x), reference_grad(g, x), scale(x, g), 3e-7)
    # torch's own float32 GELU is about as far from the definition (~1.6e-7 and 2.7e-7
    # here), so the two agree to within the sum
    assert_error_below(out, F.gelu(x).double(), scale(x), 4e-7)
    assert_error_below(kernel.gelu_backward(g, x),
                       torch.ops.aten.gelu_backward(g, x).double(), scale(x, g), 6e-7)
    # the tails: Phi exactly 0 / 1 past |x| = 13.2, no subnormal on the way there
    tail = torch.tensor([-1e30, -1e4, -100.0, -13.5, 13.5, 100.0, 1e30])
    assert torch.equal(kernel.gelu(tail), tail.clamp_min(0))
    assert torch.equal(kernel.gelu_backward(torch.ones(7), tail), (tail > 0).float())
    # tiny values are kept (torch's GELU flushes these to 0), to a relative error that
    # grows in the far tail (the fit bounds the absolute error)
    small = torch.tensor([-10.0, -5.0])
    torch.testing.assert_close(kernel.gelu(small).double(), reference(small), rtol=2e-3,
                               atol=0)


@needs_c
def test_special_values_follow_torch():
    kernel = load_backend('cpu')
    x = torch.tensor([float('nan'), float('inf'), -float('inf'), 0.0, -0.0])
    ones = torch.ones_like(x)
    for out, ref in ((kernel.gelu(x), F.gelu(x)),
                     (kernel.gelu_backward(ones, x), torch.ops.aten.gelu_backward(ones, x))):
        assert torch.equal(out.isnan(), ref.isnan())
        assert torch.equal(out.nan_to_num(), ref.nan_to_num())


@needs_c
def test_layouts_and_in_place():
    kernel = load_backend('cpu')
    x = torch.randn(2, 7, 5, 33, generator=torch.Generator().manual_seed(1))
    ref = reference(x)
    channels_last = x.permute(0, 3, 1, 2)  # dense values in another axis order
    out = kernel.gelu(channels_last)
    assert out.stride() == channels_last.stride()
    assert_error_below(out, ref.permute(0, 3, 1, 2), scale(channels_last), 2e-7)
    for view in (x[:, ::2], x.transpose(1, 2)[..., 1:], x.expand(3, 2, 7, 5, 33)):
        assert_error_below(kernel.gelu(view), reference(view), scale(view), 2e-7)
    g = torch.randn_like(x)
    mixed = kernel.gelu_backward(g.transpose(1, 2), x.transpose(1, 2).contiguous())
    assert_error_below(mixed, reference_grad(g, x).transpose(1, 2),
                       scale(x, g).transpose(1, 2), 3e-7)
    y = x.clone()
    assert kernel.gelu(y, True) is y
    assert torch.equal(y, kernel.gelu(x))
    with pytest.raises(RuntimeError, match='in-place GELU needs x.s values dense'):
        kernel.gelu(x[:, ::2], True)


@needs_c
def test_autograd_and_dispatch(monkeypatch):
    """The kernel runs forward and backward for float32 CPU tensors; float64, autocast,
    traces and backend 'torch' take F.gelu."""
    module = load_backend('cpu')
    fused_gelu, calls = module.gelu, []
    for name in ('gelu', 'gelu_backward'):
        fn = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda *a, fn=fn, name=name: calls.append(name) or fn(*a))
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    leaf = x.clone().requires_grad_()
    out = gelu(leaf)
    assert type(out.grad_fn).__name__ == 'GeluFnBackward'
    g = torch.randn_like(x)
    out.backward(g)
    assert calls == ['gelu', 'gelu_backward']
    assert_error_below(leaf.grad, reference_grad(g, x), scale(x, g), 3e-7)
    # differentiable once: a second differentiation raises instead of returning zeros
    leaf2 = x.clone().requires_grad_()
    (grad, ) = torch.autograd.grad(gelu(leaf2).sum(), leaf2, create_graph=True)
    with pytest.raises(RuntimeError, match="gelu on the compiled 'cpu' backend is "
                       'differentiable once'):
        grad.sum().backward()
    calls.clear()
    with torch.no_grad():
        assert torch.equal(gelu(x, backend='torch'), F.gelu(x))
        assert gelu(x.double()).dtype == torch.float64
        with torch.autocast('cpu', dtype=torch.bfloat16):
            gelu(x)
        torch.jit.trace(gelu, x, check_trace=False)
        y = x.clone()
        assert gelu_(y, backend='torch') is y and torch.equal(y, F.gelu(x))
        assert calls == []
        y = x.clone()
        assert gelu_(y) is y and calls == ['gelu']
        assert torch.equal(y, fused_gelu(x))
        strided = x.clone()[:, ::2]  # not dense: torch's in-place GELU
        assert torch.equal(gelu_(strided), F.gelu(x[:, ::2])) and calls == ['gelu']


@needs_c
def test_linear_gelu_trains_on_the_kernel():
    gen = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(4, 9, 24, generator=gen), torch.randn(40, 24, generator=gen), \
        torch.randn(40, generator=gen)
    grads = []
    for backend in ('cpu', 'torch'):
        w_ = w.clone().requires_grad_()
        out = linear(x, w_, b, 'gelu', backend=backend)
        out.square().sum().backward()
        grads.append((out.detach(), w_.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-6, atol=2e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-4)


@needs_c
def test_threads_do_not_change_results():
    kernel = load_backend('cpu')
    x = torch.randn(2, 14, 14, 1536, generator=torch.Generator().manual_seed(4))
    g = torch.randn_like(x)
    one, two = for_thread_counts(lambda: (kernel.gelu(x), kernel.gelu_backward(g, x)))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@needs_c
def test_kernel_errors_name_the_argument():
    kernel = load_backend('cpu')
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match='x must be float32'):
        kernel.gelu(x.double())
    with pytest.raises(RuntimeError, match='grad must be float32'):
        kernel.gelu_backward(x.half(), x)
    with pytest.raises(RuntimeError, match=r'grad has shape \(4, 7\) but x has shape'):
        kernel.gelu_backward(x[:, :7], x)
    with pytest.raises(RuntimeError, match='x must be a CPU tensor'):
        kernel.gelu(x.to('meta'))


CHILD = r'''
import sys, torch
from mmssm.ops.kernels import load_backend
k = load_backend('cpu')
x, g = torch.load(sys.argv[1])
torch.save([k.gelu(x), k.gelu_backward(g, x)], sys.argv[2])
'''


@needs_c
@pytest.mark.parametrize('isa', ['generic', 'avx2'])
def test_instruction_sets(isa, tmp_path):
    """The kernel compiled for the lower instruction sets (MMSSM_CPU_ISA: a subprocess)."""
    x = grid(40_001)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    out, dx = run_with_cpu_isa(isa, CHILD, (x, g), tmp_path)
    assert_error_below(out, reference(x), scale(x), 2e-7)
    assert_error_below(dx, reference_grad(g, x), scale(x, g), 3e-7)
