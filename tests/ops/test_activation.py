"""mmssm.ops.activation: the CPU kernel (mmssm._C.activation / activation_backward) of
GELU and SiLU and the composites F.gelu / F.silu, against float64 references written
from the definitions (x Phi(x) and Phi + x phi; x s and s (1 + x (1 - s)), s =
sigmoid)."""
import math

import pytest
import torch
import torch.nn.functional as F
from cpu_runs import for_thread_counts, run_with_cpu_isa

from mmssm.ops.activation import gelu, gelu_, silu, silu_
from mmssm.ops.kernels import backend_available, load_backend
from mmssm.ops.linear import linear

needs_c = pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
KINDS = ['gelu', 'silu']
FUNCTIONS = {'gelu': (gelu, gelu_), 'silu': (silu, silu_)}
TORCH = {'gelu': (F.gelu, torch.ops.aten.gelu_backward),
         'silu': (F.silu, torch.ops.aten.silu_backward)}
# the kernel's error bounds (forward, backward) in units of max(1, |x|) (* |grad|):
# measured 1.1e-7 / 2.2e-7 (GELU) and 1.4e-7 / 1.2e-7 (SiLU); torch's own float32 ops
# are as far from the definitions (1.6e-7 / 2.7e-7 and 1.2e-7 / 1.5e-7)
BOUNDS = {'gelu': (2e-7, 3e-7), 'silu': (2e-7, 2e-7)}


def cdf(x):
    return 0.5 * torch.special.erfc(-x / math.sqrt(2))


def reference(kind, x):
    x = x.double()
    return x * (cdf(x) if kind == 'gelu' else torch.sigmoid(x))


def reference_grad(kind, grad, x):
    x = x.double()
    if kind == 'gelu':
        slope = cdf(x) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    else:
        s = torch.sigmoid(x)
        slope = s * (1 + x * (1 - s))
    return grad.double() * slope


def grid(n=200_003):
    """Dense in [-14, 14] (past where Phi leaves (0, 1) in float32), an odd length: a
    partial last vector after full blocks of four."""
    return torch.linspace(-14, 14, n)


def scale(x, grad=None):
    """max(1, |x|) (times |grad| for a gradient): the activations' absolute error grows
    with |x|, as x's own rounding does."""
    s = x.double().abs().clamp_min(1)
    return s if grad is None else s * grad.double().abs()


def assert_error_below(out, ref, scale, bound):
    """|out - ref| <= bound * scale everywhere."""
    err = (out.double() - ref).abs() / scale
    assert err.max().item() <= bound, f'max scaled error {err.max().item():.3g}'


def check_against_definition(kind, out, dx, x, g):
    fwd, bwd = BOUNDS[kind]
    assert_error_below(out, reference(kind, x), scale(x), fwd)
    assert_error_below(dx, reference_grad(kind, g, x), scale(x, g), bwd)


@needs_c
@pytest.mark.parametrize('kind', KINDS)
def test_kernel_matches_the_definition(kind):
    kernel = load_backend('cpu')
    x = grid()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out, dx = kernel.activation(x, kind), kernel.activation_backward(g, x, kind)
    check_against_definition(kind, out, dx, x, g)
    # torch's float32 ops are about as far from the definitions: the two agree within
    # the sum of the bounds
    forward, backward = TORCH[kind]
    assert_error_below(out, forward(x).double(), scale(x), 2 * BOUNDS[kind][0])
    assert_error_below(dx, backward(g, x).double(), scale(x, g), 2 * BOUNDS[kind][1])


@needs_c
def test_tails():
    kernel = load_backend('cpu')
    # GELU: Phi exactly 0 / 1 past |x| = 13.2, no subnormal on the way there
    tail = torch.tensor([-1e30, -1e4, -100.0, -13.5, 13.5, 100.0, 1e30])
    ones = torch.ones(7)
    assert torch.equal(kernel.activation(tail, 'gelu'), tail.clamp_min(0))
    assert torch.equal(kernel.activation_backward(ones, tail, 'gelu'), (tail > 0).float())
    # tiny values are kept (torch's GELU flushes these to 0), to a relative error that
    # grows in the far tail (the fit bounds the absolute error)
    small = torch.tensor([-10.0, -5.0])
    torch.testing.assert_close(kernel.activation(small, 'gelu').double(),
                               reference('gelu', small), rtol=2e-3, atol=0)
    # SiLU: sigmoid exactly 0 below x = -87
    tail = torch.tensor([-1e30, -1e4, -100.0, -88.0, -86.0, 100.0, 1e30])
    out = kernel.activation(tail, 'silu')
    assert torch.equal(out[:4], torch.zeros(4)) and torch.equal(out[5:], tail[5:])
    torch.testing.assert_close(out[4].double(), reference('silu', tail[4]), rtol=1e-5,
                               atol=0)
    assert torch.equal(kernel.activation_backward(ones, tail, 'silu')[:4], torch.zeros(4))


@needs_c
@pytest.mark.parametrize('kind', KINDS)
def test_special_values_follow_torch(kind):
    kernel = load_backend('cpu')
    forward, backward = TORCH[kind]
    x = torch.tensor([float('nan'), float('inf'), -float('inf'), 0.0, -0.0])
    ones = torch.ones_like(x)
    for out, ref in ((kernel.activation(x, kind), forward(x)),
                     (kernel.activation_backward(ones, x, kind), backward(ones, x))):
        assert torch.equal(out.isnan(), ref.isnan())
        assert torch.equal(out.nan_to_num(), ref.nan_to_num())


@needs_c
@pytest.mark.parametrize('kind', KINDS)
def test_layouts_and_in_place(kind):
    kernel = load_backend('cpu')
    x = torch.randn(2, 7, 5, 33, generator=torch.Generator().manual_seed(1))
    fwd, bwd = BOUNDS[kind]
    channels_last = x.permute(0, 3, 1, 2)  # dense values in another axis order
    out = kernel.activation(channels_last, kind)
    assert out.stride() == channels_last.stride()
    assert_error_below(out, reference(kind, channels_last), scale(channels_last), fwd)
    for view in (x[:, ::2], x.transpose(1, 2)[..., 1:], x.expand(3, 2, 7, 5, 33)):
        assert_error_below(kernel.activation(view, kind), reference(kind, view), scale(view),
                           fwd)
    g = torch.randn_like(x)
    mixed = kernel.activation_backward(g.transpose(1, 2), x.transpose(1, 2).contiguous(),
                                       kind)
    assert_error_below(mixed, reference_grad(kind, g, x).transpose(1, 2),
                       scale(x, g).transpose(1, 2), bwd)
    y = x.clone()
    assert kernel.activation(y, kind, True) is y
    assert torch.equal(y, kernel.activation(x, kind))
    with pytest.raises(RuntimeError, match='in-place activation needs x.s values dense'):
        kernel.activation(x[:, ::2], kind, True)


@needs_c
@pytest.mark.parametrize('kind', KINDS)
def test_autograd_and_dispatch(kind, monkeypatch):
    """The kernel runs forward and backward for float32 CPU tensors; float64, autocast,
    traces and backend 'torch' take the composite."""
    module = load_backend('cpu')
    fused, calls = module.activation, []
    for name in ('activation', 'activation_backward'):
        fn = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda *a, fn=fn, name=name: calls.append(name) or fn(*a))
    function, function_ = FUNCTIONS[kind]
    composite = TORCH[kind][0]
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    leaf = x.clone().requires_grad_()
    out = function(leaf)
    assert type(out.grad_fn).__name__ == 'ActivationFnBackward'
    g = torch.randn_like(x)
    out.backward(g)
    assert calls == ['activation', 'activation_backward']
    assert_error_below(leaf.grad, reference_grad(kind, g, x), scale(x, g), BOUNDS[kind][1])
    # differentiable once: a second differentiation raises instead of returning zeros
    leaf2 = x.clone().requires_grad_()
    (grad, ) = torch.autograd.grad(function(leaf2).sum(), leaf2, create_graph=True)
    with pytest.raises(RuntimeError, match=f"{kind} on the compiled 'cpu' backend is "
                       'differentiable once'):
        grad.sum().backward()
    calls.clear()
    with torch.no_grad():
        assert torch.equal(function(x, backend='torch'), composite(x))
        assert function(x.double()).dtype == torch.float64
        with torch.autocast('cpu', dtype=torch.bfloat16):
            function(x)
        torch.jit.trace(function, x, check_trace=False)
        y = x.clone()
        assert function_(y, backend='torch') is y and torch.equal(y, composite(x))
        assert calls == []
        y = x.clone()
        assert function_(y) is y and calls == ['activation']
        assert torch.equal(y, fused(x, kind))
        strided = x.clone()[:, ::2]  # not dense: torch's in-place op
        assert torch.equal(function_(strided), composite(x[:, ::2]))
        assert calls == ['activation']


@needs_c
@pytest.mark.parametrize('kind', KINDS)
def test_linear_trains_on_the_kernel(kind):
    gen = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(4, 9, 24, generator=gen), torch.randn(40, 24, generator=gen), \
        torch.randn(40, generator=gen)
    results = []
    for backend in ('cpu', 'torch'):
        w_ = w.clone().requires_grad_()
        out = linear(x, w_, b, kind, backend=backend)
        out.square().sum().backward()
        results.append((out.detach(), w_.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=2e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-4)


@needs_c
@pytest.mark.parametrize('kind', KINDS)
def test_threads_do_not_change_results(kind):
    kernel = load_backend('cpu')
    x = torch.randn(2, 14, 14, 1536, generator=torch.Generator().manual_seed(4))
    g = torch.randn_like(x)
    one, two = for_thread_counts(lambda: (kernel.activation(x, kind),
                                          kernel.activation_backward(g, x, kind)))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@needs_c
def test_kernel_errors_name_the_argument():
    kernel = load_backend('cpu')
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match='x must be float32'):
        kernel.activation(x.double(), 'gelu')
    with pytest.raises(RuntimeError, match='grad must be float32'):
        kernel.activation_backward(x.half(), x, 'silu')
    with pytest.raises(RuntimeError, match=r'grad has shape \(4, 7\) but x has shape'):
        kernel.activation_backward(x[:, :7], x, 'gelu')
    with pytest.raises(RuntimeError, match='x must be a CPU tensor'):
        kernel.activation(x.to('meta'), 'silu')
    with pytest.raises(RuntimeError, match="unknown activation 'relu'; expected 'gelu' or"):
        kernel.activation(x, 'relu')


CHILD = r'''
import sys, torch
from mmssm.ops.kernels import load_backend
k = load_backend('cpu')
x, g = torch.load(sys.argv[1])
torch.save([(k.activation(x, kind), k.activation_backward(g, x, kind))
            for kind in ('gelu', 'silu')], sys.argv[2])
'''


@needs_c
@pytest.mark.parametrize('isa', ['generic', 'avx2'])
def test_instruction_sets(isa, tmp_path):
    """The kernel compiled for the lower instruction sets (MMSSM_CPU_ISA: a subprocess)."""
    x = grid(40_001)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    for kind, (out, dx) in zip(KINDS, run_with_cpu_isa(isa, CHILD, (x, g), tmp_path)):
        check_against_definition(kind, out, dx, x, g)
