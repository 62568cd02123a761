"""``selective_scan_routes``: gather, scan and merge of a scan pattern's routes in one call,
fused on CPU (``mmssm._C.fwd_routes``; in training ``fwd_routes_saved`` / ``bwd_routes``),
against its definition written with the pattern-level ops (``gather_routes`` ->
``selective_scan_lowrank`` -> ``merge_routes``): outputs and gradients for every pattern,
N = 1 / 16 / other, partial channel tiles, strided maps, float64, the dispatch, thread
counts, instruction sets and the errors."""
import pytest
import torch
from cpu_runs import for_thread_counts, run_with_cpu_isa

import mmssm.ops.routed_scan as routed_scan
from mmssm.ops import scan_backend, selective_scan_lowrank
from mmssm.ops.kernels import SelectiveScanRoutesFn, backend_available, load_backend
from mmssm.ops.routed_scan import merge_token_routes, selective_scan_routes
from mmssm.ops.scan_patterns import gather_routes, get_scan_pattern, merge_routes

pytestmark = pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
# (pattern, (H, W), E, N, R, batch): every pattern (multiscale_low: one route visiting
# every token three times; atrous: padding steps), E not a multiple of any SIMD width,
# maps longer than a 64-step block.
CASES = [('cross', (7, 9), 40, 1, 3, 2), ('cross', (12, 11), 19, 16, 6, 1),
         ('atrous', (5, 7), 16, 4, 2, 2), ('bidirectional', (3, 13), 24, 5, 1, 1),
         ('multiscale_low', (6, 5), 8, 1, 2, 1), ('row', (1, 1), 3, 1, 1, 2)]
ARGS = ('x', 'index', 'delta_lowrank', 'delta_weight', 'A', 'B', 'C', 'D', 'delta_bias')


def make_case(pattern, size, channels, dstate, rank, batch, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    index = get_scan_pattern(pattern).index(*size)
    routes, tokens = index.shape[0], size[0] * size[1]
    dim = routes * channels

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(dtype)

    return dict(x=randn(batch, tokens, channels), index=index,
                delta_lowrank=randn(batch, routes, rank, tokens, scale=0.5),
                delta_weight=randn(dim, rank, scale=rank ** -0.5),
                A=(-0.5 * torch.rand(dim, dstate, generator=gen) - 0.1).to(dtype),
                B=randn(batch, routes, dstate, tokens), C=randn(batch, routes, dstate, tokens),
                D=randn(dim), delta_bias=(0.5 * torch.rand(dim, generator=gen) - 1.0).to(dtype))


def definition(pattern, size, case):
    """merge(scan(gather)) with the pattern-level ops: every per-token tensor is read as an
    (H, W) map and gathered along the routes; route k keeps its own rows."""
    x, index = case['x'], case['index']
    batch, _, channels = x.shape
    routes = index.shape[0]

    def routed(per_token):  # (B, K, S, T) -> (B, K, S, L), route k of group k
        rows = per_token.shape[2]
        maps = per_token.reshape(batch, routes * rows, *size)
        every = gather_routes(maps, pattern)  # (B, K, K * S, L)
        return torch.stack([every[:, k, k * rows:(k + 1) * rows] for k in range(routes)], 1)

    us = gather_routes(x.transpose(1, 2).reshape(batch, channels, *size), pattern)
    ys = selective_scan_lowrank(us.reshape(batch, routes * channels, -1),
                                routed(case['delta_lowrank']), case['delta_weight'],
                                case['A'], routed(case['B']), routed(case['C']), case['D'],
                                delta_bias=case['delta_bias'], delta_softplus=True,
                                backend='torch')
    merged = merge_routes(ys.view(batch, routes, channels, -1), pattern, size)
    return merged.reshape(batch, channels, -1).transpose(1, 2)


@pytest.mark.parametrize('pattern,size,channels,dstate,rank,batch', CASES)
def test_fused_and_composite_match_the_definition(pattern, size, channels, dstate, rank,
                                                  batch):
    case = make_case(pattern, size, channels, dstate, rank, batch, torch.float64)
    expected = definition(pattern, size, case)
    composite = selective_scan_routes(**case, delta_softplus=True, backend='torch')
    fused64 = load_backend('cpu').fwd_routes(*(case[k] for k in ARGS), True, True)
    torch.testing.assert_close(composite, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused64, expected, rtol=1e-12, atol=1e-12)
    case32 = {k: (v.float() if v.is_floating_point() else v) for k, v in case.items()}
    with torch.no_grad():
        fused32 = selective_scan_routes(**case32, delta_softplus=True)
    torch.testing.assert_close(fused32.double(), expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('pattern,size', [('multiscale_low', (5, 6)), ('atrous', (3, 5))])
def test_unmerged_outputs_are_the_route_steps(pattern, size):
    """merge=False returns every route's outputs per step, token-major (padding steps
    included); merge_token_routes of them is the merged result."""
    case = make_case(pattern, size, 20, 2, 3, 2, torch.float64)
    merged = selective_scan_routes(**case, delta_softplus=True, backend='torch')
    steps = selective_scan_routes(**case, delta_softplus=True, merge=False, backend='torch')
    fused = load_backend('cpu').fwd_routes(*(case[k] for k in ARGS), True, False)
    assert steps.shape == (2, *case['index'].shape, 20)
    torch.testing.assert_close(fused, steps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merge_token_routes(steps, case['index'], size[0] * size[1]),
                               merged, rtol=1e-12, atol=1e-12)
    case32 = {k: (v.float() if v.is_floating_point() else v) for k, v in case.items()}
    with torch.no_grad():
        fused32 = selective_scan_routes(**case32, delta_softplus=True, merge=False)
    torch.testing.assert_close(fused32.double(), steps, rtol=2e-5, atol=2e-5)


def test_strided_inputs():
    """A channels-last map's token view (what SS2D passes) and a map whose channels are
    strided (copied by the binding); per-token rows sliced out of a wider projection."""
    case = make_case('cross', (9, 8), 32, 1, 4, 2)
    expected = selective_scan_routes(**case, delta_softplus=True, backend='torch')
    nchw = case['x'].transpose(1, 2).reshape(2, 32, 9, 8).contiguous(
        memory_format=torch.channels_last)
    proj = torch.cat([case['delta_lowrank'], case['B']], 2)  # (B, K, R + N, T)
    strided = dict(case, x=nchw.permute(0, 2, 3, 1).reshape(2, 72, 32),
                   delta_lowrank=proj[:, :, :4], B=proj[:, :, 4:])
    assert strided['x'].stride() == (72 * 32, 32, 1) and not strided['B'].is_contiguous()
    channel_strided = dict(case, x=torch.stack([case['x'], case['x']], -1)[..., 0])
    with torch.no_grad():
        for inputs in (strided, channel_strided):
            torch.testing.assert_close(selective_scan_routes(**inputs, delta_softplus=True),
                                       expected, rtol=2e-5, atol=2e-5)


def test_the_kernel_runs_where_it_applies(monkeypatch):
    """Fused for float32 CPU inference; the fused training kernels where a graph is built
    in float32 (merged routes or not); composite for float64 and on the 'torch' backend
    -- and every path has gradients."""
    calls, trained = [], []
    real = routed_scan.fused_inference_applies
    monkeypatch.setattr(routed_scan, 'fused_inference_applies',
                        lambda *a: calls.append(real(*a)) or calls[-1])
    real_apply = SelectiveScanRoutesFn.apply
    monkeypatch.setattr(SelectiveScanRoutesFn, 'apply',
                        lambda *a: trained.append(a[0].shape) or real_apply(*a))
    case = make_case('bidirectional', (4, 6), 16, 1, 2, 1)
    with torch.no_grad():
        selective_scan_routes(**case, delta_softplus=True)
        with scan_backend('torch'):
            selective_scan_routes(**case, delta_softplus=True)
        case64 = {k: (v.double() if v.is_floating_point() else v) for k, v in case.items()}
        selective_scan_routes(**case64, delta_softplus=True)
    assert calls == [True, False, False] and trained == []
    for dtype, merge, backend, fused in [(torch.float32, True, None, True),
                                         (torch.float32, True, 'torch', False),
                                         (torch.float32, False, None, True),
                                         (torch.float64, True, None, False)]:
        trained.clear()
        inputs = {k: (v.to(dtype, copy=True) if v.is_floating_point() else v)
                  for k, v in case.items()}
        x = inputs['x'].requires_grad_()
        out = selective_scan_routes(**inputs, delta_softplus=True, merge=merge,
                                    backend=backend)
        assert len(trained) == int(fused), (dtype, merge, backend)
        out.square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def _gradients(fn, case, names=ARGS):
    inputs = {k: (v.detach().clone().requires_grad_() if v.is_floating_point() else v)
              for k, v in case.items()}
    out = fn(inputs)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad((out * weights).sum(),
                                [inputs[k] for k in names if k != 'index'])
    return out, dict(zip([k for k in names if k != 'index'], grads))


@pytest.mark.parametrize('merge', [True, False])
@pytest.mark.parametrize('pattern,size,channels,dstate,rank,batch', CASES)
def test_training_kernels_match_the_definition(pattern, size, channels, dstate, rank,
                                               batch, merge):
    """The routed forward / backward pair (float64 through the autograd function, float32
    through the dispatch) against autograd through the definition (merged) or the
    composite path (per step, itself checked against the definition above): every
    input's gradient, with padding steps (atrous) and tokens visited more than once per
    route (multiscale_low)."""
    case = make_case(pattern, size, channels, dstate, rank, batch, torch.float64)
    if merge:
        expected, grads = _gradients(lambda c: definition(pattern, size, c), case)
    else:
        expected, grads = _gradients(
            lambda c: selective_scan_routes(**c, delta_softplus=True, merge=False,
                                            backend='torch'), case)
    out, fused = _gradients(
        lambda c: SelectiveScanRoutesFn.apply(*(c[k] for k in ARGS), True, True, merge),
        case)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for name, grad in grads.items():
        torch.testing.assert_close(fused[name], grad, rtol=1e-10, atol=1e-10, msg=name)
    case32 = {k: (v.float() if v.is_floating_point() else v) for k, v in case.items()}
    out32, fused32 = _gradients(
        lambda c: selective_scan_routes(**c, delta_softplus=True, merge=merge), case32)
    assert out32.grad_fn is not None and 'SelectiveScanRoutes' in type(out32.grad_fn).__name__
    for name, grad in grads.items():
        scale = grad.abs().max().item() + 1.0
        torch.testing.assert_close(fused32[name].double() / scale, grad / scale,
                                   rtol=1e-4, atol=2e-5, msg=name)


def test_gradcheck_of_the_training_kernels():
    case = make_case('atrous', (3, 4), 5, 2, 2, 2, torch.float64)
    inputs = [case[k].requires_grad_() if k != 'index' else case[k] for k in ARGS]
    index = inputs.pop(1)
    assert torch.autograd.gradcheck(
        lambda *t: SelectiveScanRoutesFn.apply(t[0], index, *t[1:], True), tuple(inputs))
    without = make_case('cross', (3, 3), 3, 1, 1, 1, torch.float64)
    x, low = without['x'].requires_grad_(), without['delta_lowrank'].requires_grad_()
    assert torch.autograd.gradcheck(  # no D, no delta_bias, no softplus
        lambda x, low: SelectiveScanRoutesFn.apply(
            x, without['index'], low, without['delta_weight'], without['A'], without['B'],
            without['C'], None, None, False), (x, low))


def test_training_kernels_are_differentiable_once():
    case = make_case('cross', (3, 3), 4, 1, 2, 1)
    x = case['x'].requires_grad_()
    out = selective_scan_routes(**case, delta_softplus=True)
    (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='differentiable once'):
        grad.sum().backward()


def test_gradcheck_of_the_composite_path():
    case = make_case('atrous', (3, 3), 4, 2, 1, 1, torch.float64)
    case['x'].requires_grad_()
    case['B'].requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, b: selective_scan_routes(**dict(case, x=x, B=b), delta_softplus=True),
        (case['x'], case['B']))


def test_deterministic_across_thread_counts():
    case = make_case('cross', (24, 24), 64, 1, 6, 2)
    with torch.no_grad():
        one, two = for_thread_counts(
            lambda: selective_scan_routes(**case, delta_softplus=True))
    assert torch.equal(one, two)


@pytest.mark.parametrize('pattern,size,channels,dstate,rank,batch', [
    ('cross', (7, 9), 40, 1, 3, 2), ('cross', (9, 8), 19, 16, 6, 2),
    ('atrous', (5, 7), 44, 4, 2, 1), ('multiscale_low', (6, 5), 64, 1, 2, 1)])
def test_items_of_one_or_two_tiles_compute_the_same(pattern, size, channels, dstate, rank,
                                                    batch):
    """The routed forward's items are two channel tiles on one thread (at least 4 tiles in
    all here) and one tile on 16 (fewer than 64 tiles): the same outputs and gradients
    (the backward restarts from the forward's chunk states), bit for bit, and outputs
    equal to the definition; odd tile counts and partial last tiles included."""
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-12)):
        case = make_case(pattern, size, channels, dstate, rank, batch, dtype)
        with torch.no_grad():
            pairs, singles = for_thread_counts(
                lambda: load_backend('cpu').fwd_routes(*(case[k] for k in ARGS), True, True),
                counts=(1, 16))
        assert torch.equal(pairs, singles)
        expected = definition(pattern, size, {k: v.double() if v.is_floating_point() else v
                                              for k, v in case.items()})
        torch.testing.assert_close(pairs.double(), expected, rtol=tol, atol=tol)

    def step():
        return _gradients(lambda c: selective_scan_routes(**c, delta_softplus=True),
                          make_case(pattern, size, channels, dstate, rank, batch))

    (out1, grads1), (out16, grads16) = for_thread_counts(step, counts=(1, 16))
    assert torch.equal(out1, out16)
    for name in grads1:
        assert torch.equal(grads1[name], grads16[name]), name


def test_training_kernels_deterministic_across_thread_counts():
    case = make_case('cross', (24, 24), 64, 1, 6, 2)

    def step():
        return _gradients(lambda c: selective_scan_routes(**c, delta_softplus=True), case)

    (out1, grads1), (out2, grads2) = for_thread_counts(step)
    assert torch.equal(out1, out2)
    for name in grads1:
        assert torch.equal(grads1[name], grads2[name]), name


@pytest.mark.parametrize('name,value,error,pattern', [
    ('x', torch.zeros(2, 5), ValueError, r'x must be \(B, T, E\)'),
    ('index', torch.zeros(4, 63), ValueError, 'index must be a .K, L. integer'),
    ('index', torch.full((4, 63), 63), ValueError, r'index entries must be in \[-1, 63\)'),
    ('B', torch.zeros(2, 4, 1, 62), ValueError, 'B must be'),
    ('delta_lowrank', torch.zeros(2, 4, 3, 63, dtype=torch.float64), TypeError,
     'delta_lowrank has dtype'),
    ('delta_weight', torch.zeros(4 * 40, 2), ValueError, 'delta_weight must be'),
])
def test_bad_inputs_name_the_argument(name, value, error, pattern):
    case = dict(make_case('cross', (7, 9), 40, 1, 3, 2), **{name: value})
    with pytest.raises(error, match=pattern):
        selective_scan_routes(**case, delta_softplus=True, backend='torch')


def test_binding_checks_its_arguments():
    fwd = load_backend('cpu').fwd_routes
    case = make_case('cross', (7, 9), 40, 1, 3, 2)
    args = [case[k] for k in ARGS]
    for position, value, pattern in [
            (1, torch.full((4, 63), -2), r'route_index holds -2'),
            (1, torch.full((4, 63), 63), r'route_index holds 63'),
            (1, case['index'].int(), 'int64'),
            (0, case['x'].half(), 'float32 or float64'),
            (5, case['B'][..., :-1], 'B has shape'),
            (4, case['A'].double(), 'A has dtype')]:
        bad = list(args)
        bad[position] = value
        with pytest.raises(RuntimeError, match=pattern):
            fwd(*bad, True, True)


@pytest.mark.parametrize('pattern,size', [('atrous', (5, 7)), ('multiscale_low', (6, 5))])
def test_rows_per_token_or_per_step(pattern, size):
    """The kernels read the low-rank delta / B / C rows per token (gathered at every
    step) or already in step order (route_step_rows, what the Python paths pass): the
    same outputs and gradients, which are per token either way."""
    from mmssm.ops.kernels import route_step_rows
    module = load_backend('cpu')
    case = make_case(pattern, size, 20, 3, 2, 2, torch.float64)
    index = case['index']
    stepped = dict(case, **{k: route_step_rows(case[k], index, True)
                            for k in ('delta_lowrank', 'B', 'C')})
    assert stepped['B'].shape[-1] == index.shape[1]
    per_token = [case[k] for k in ARGS]
    per_step = [stepped[k] for k in ARGS]
    for merge in (True, False):
        torch.testing.assert_close(module.fwd_routes(*per_step, True, merge, True),
                                   module.fwd_routes(*per_token, True, merge),
                                   rtol=1e-13, atol=1e-13)
    out, states = module.fwd_routes_saved(*per_token, True)
    out_s, states_s = module.fwd_routes_saved(*per_step, True, True)
    torch.testing.assert_close(out_s, out, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(states_s, states, rtol=1e-13, atol=1e-13)
    dout = torch.randn_like(out)
    grads = module.bwd_routes(*per_token, dout, states, True)
    grads_s = module.bwd_routes(*per_step, dout, states, True, True)
    for got, want in zip(grads_s, grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    steps, states = module.fwd_routes_saved(*per_token, True, False, False)
    dsteps = torch.randn_like(steps)
    grads = module.bwd_routes(*per_token, dsteps, states, True, False, False)
    grads_s = module.bwd_routes(*per_step, dsteps, states, True, True, False)
    for got, want in zip(grads_s, grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match='delta_lowrank has shape'):
        module.fwd_routes(*per_token, True, True, True)


@pytest.mark.parametrize('merge', [True, False])
@pytest.mark.parametrize('pattern,size', [('atrous', (5, 7)), ('multiscale_low', (6, 5)),
                                          ('cross', (4, 5))])
def test_rows_given_per_step(pattern, size, merge):
    """rows_by_step=True: delta_lowrank / B / C are given per route step (B, K, S, L) and
    used as given at every step, padding steps too (SS2D passes them so for 'atrous',
    whose routes each read a quarter of the map). The training kernels (row gradients per
    step), the float32 dispatch (inference and training) and the composite path agree;
    rows that are per-token rows put in step order give the per-token call's output, and
    their step gradients summed onto the tokens are its gradients."""
    from mmssm.ops.kernels import route_step_rows
    case = make_case(pattern, size, 20, 3, 2, 2, torch.float64)
    index = case['index']
    rows = ('delta_lowrank', 'B', 'C')
    gen = torch.Generator().manual_seed(1)
    steps = dict(case, **{k: 0.5 * torch.randn(*case[k].shape[:3], index.shape[1],
                                                generator=gen, dtype=torch.float64)
                          for k in rows})  # (non-zero at padding steps as well)

    def fused(c):
        return SelectiveScanRoutesFn.apply(*(c[k] for k in ARGS), True, True, merge, True)

    expected, grads = _gradients(
        lambda c: selective_scan_routes(**c, delta_softplus=True, merge=merge,
                                        rows_by_step=True, backend='torch'), steps)
    out, got = _gradients(fused, steps)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for name, grad in grads.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-10, atol=1e-10, msg=name)
    steps32 = {k: (v.float() if v.is_floating_point() else v) for k, v in steps.items()}
    with torch.no_grad():
        inferred = selective_scan_routes(**steps32, delta_softplus=True, merge=merge,
                                         rows_by_step=True)
    torch.testing.assert_close(inferred.double(), expected, rtol=2e-5, atol=2e-5)
    out32, got32 = _gradients(
        lambda c: selective_scan_routes(**c, delta_softplus=True, merge=merge,
                                        rows_by_step=True), steps32)
    assert 'SelectiveScanRoutes' in type(out32.grad_fn).__name__
    for name, grad in grads.items():
        scale = grad.abs().max().item() + 1.0
        torch.testing.assert_close(got32[name].double() / scale, grad / scale,
                                   rtol=1e-4, atol=2e-5, msg=name)

    per_token, token_grads = _gradients(
        lambda c: selective_scan_routes(**c, delta_softplus=True, merge=merge,
                                        backend='torch'), case)
    gathered = dict(case, **{k: route_step_rows(case[k], index, True) for k in rows})
    out, step_grads = _gradients(fused, gathered)
    torch.testing.assert_close(out, per_token, rtol=1e-12, atol=1e-12)
    for name in rows:
        summed = torch.zeros_like(token_grads[name])
        for k, route in enumerate(index):
            valid = route >= 0
            summed[:, k].index_add_(2, route[valid], step_grads[name][:, k][..., valid])
        torch.testing.assert_close(summed, token_grads[name], rtol=1e-10, atol=1e-10,
                                   msg=name)
    if index.shape[1] != case['B'].shape[-1]:  # per-token rows where steps are expected
        with pytest.raises(ValueError, match=r'B must be \(2, \d+, 3, %d\)' % index.shape[1]):
            selective_scan_routes(**dict(steps, B=case['B']), delta_softplus=True,
                                  rows_by_step=True)


def test_backward_binding_checks_its_arguments():
    module = load_backend('cpu')
    case = make_case('cross', (7, 9), 40, 1, 3, 2)
    args = [case[k] for k in ARGS]
    out, states = module.fwd_routes_saved(*args, True)
    assert states.shape == (2, 160, 1, 1)
    steps, _ = module.fwd_routes_saved(*args, True, False, False)
    assert steps.shape == (2, 4, 63, 40)
    with pytest.raises(RuntimeError, match='dout has shape'):
        module.bwd_routes(*args, out, states, True, False, False)  # per-token, not per-step
    for dout, saved, pattern in [(out[:, :-1], states, 'dout has shape'),
                                 (out.double(), states, 'dout has dtype'),
                                 (out, states[:, :-1], 'chunk_states has shape'),
                                 (out, states.double(), 'chunk_states has dtype')]:
        with pytest.raises(RuntimeError, match=pattern):
            module.bwd_routes(*args, dout, saved, True)
    bad = list(args)
    bad[1] = torch.full((4, 63), 70)
    with pytest.raises(RuntimeError, match='route_index holds 70'):
        module.bwd_routes(*bad, out, states, True)
    with pytest.raises(RuntimeError, match=r'per route step \(grads_by_step\) only for rows '
                                           r'given per route step \(rows_by_step\)'):
        module.bwd_routes(*args, out, states, True, False, True, True)


@pytest.mark.parametrize('batch,channels', [(0, 16), (2, 0)])
def test_empty_sizes(batch, channels):
    case = make_case('cross', (4, 4), channels, 1, 2, batch)
    with torch.no_grad():
        out = selective_scan_routes(**case, delta_softplus=True)
    assert out.shape == (batch, 16, channels)
    out, grads = _gradients(lambda c: selective_scan_routes(**c, delta_softplus=True), case)
    assert out.shape == (batch, 16, channels)
    assert all(g.abs().sum() == 0 for g in grads.values())


CHILD = '''
import sys, torch
from mmssm.ops import kernels
from mmssm.ops.routed_scan import merge_token_routes, selective_scan_routes
case = torch.load(sys.argv[1])
with torch.no_grad():
    out = selective_scan_routes(**case, delta_softplus=True)
inputs = {k: (v.requires_grad_() if v.is_floating_point() else v) for k, v in case.items()}
trained = selective_scan_routes(**inputs, delta_softplus=True)
trained.square().sum().backward()
grads = {k: v.grad for k, v in inputs.items() if k != 'index'}
torch.save((kernels.load_backend('cpu').cpu_isa(), out, grads), sys.argv[2])
'''


@pytest.mark.parametrize('isa', ['generic', 'avx2'])
def test_instruction_sets(isa, tmp_path):
    case = make_case('cross', (9, 10), 40, 16, 3, 1)
    expected = selective_scan_routes(**case, delta_softplus=True, backend='torch')
    used, out, grads = run_with_cpu_isa(isa, CHILD, case, tmp_path)
    if used != isa:
        pytest.skip(f'this CPU runs {used!r}, not {isa!r}')
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-5)
    inputs = {k: (v.double().requires_grad_() if v.is_floating_point() else v)
              for k, v in case.items()}
    definition('cross', (9, 10), inputs).square().sum().backward()
    for name, grad in grads.items():
        ref = inputs[name].grad
        scale = ref.abs().max().item() + 1.0
        torch.testing.assert_close(grad.double() / scale, ref / scale, rtol=1e-4, atol=2e-5,
                                   msg=name)
