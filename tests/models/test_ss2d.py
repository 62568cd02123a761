"""The shared selective-scan core (``mmssm/models/layers/ss2d.py``) on its own.

* ``SelectiveScanRoutes``: parameter names/shapes, both from-scratch inits, and
  ``scan_routes`` against the float64 reference scan run route by route.
* ``SS2D``: the whole mixer against a step-by-step float64 re-implementation in which
  every scan order is written out with flips / transposes / strided slices (not the
  index maps the module uses), for each pattern, gated or not, odd map sizes.
* bad input and the official init ranges (``inverse_softplus_dt``).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mmssm.models.layers import SS2D, SelectiveScanRoutes, inverse_softplus_dt
from mmssm.ops import selective_scan_reference


def routes_reference(module, xs):
    """(B, K, E, L) -> (B, K, E, L): each route scanned with its own parameters."""
    k_routes, channels, n, r = module.num_routes, module.d_inner, module.d_state, module.dt_rank
    outs = []
    for k in range(xs.shape[1]):
        x = xs[:, k]  # (B, E, L)
        proj = torch.einsum('bel,ce->bcl', x, module.x_proj_weight[k])
        dt, b_proj, c_proj = proj[:, :r], proj[:, r:r + n], proj[:, r + n:]
        delta = torch.einsum('brl,er->bel', dt, module.dt_projs_weight[k])
        rows = slice(k * channels, (k + 1) * channels)
        outs.append(selective_scan_reference(
            x, delta, -torch.exp(module.A_logs[rows]), b_proj.unsqueeze(1), c_proj.unsqueeze(1),
            module.Ds[rows],
            delta_bias=module.dt_projs_bias[k], delta_softplus=True))
    assert len(outs) <= k_routes
    return torch.stack(outs, dim=1)


def sequences(pattern, x):
    """(B, E, H, W) -> list of (B, E, L_k) route sequences and a function mapping route
    outputs back onto the (B, E, H, W) map, written out by hand per pattern."""
    batch, channels, height, width = x.shape
    if pattern == 'cross':
        row = x.flatten(2)
        col = x.transpose(2, 3).flatten(2)
        seqs = [row, col, row.flip(-1), col.flip(-1)]

        def merge(ys):
            col_back = lambda y: y.view(batch, channels, width, height).transpose(2, 3)  # noqa
            return (ys[0].view_as(x) + col_back(ys[1]) + ys[2].flip(-1).view_as(x)
                    + col_back(ys[3].flip(-1)))
        return seqs, merge
    if pattern == 'bidirectional':
        row = x.flatten(2)
        return [row, row.flip(-1)], lambda ys: (ys[0] + ys[1].flip(-1)).view_as(x)
    if pattern == 'atrous':
        padded = F.pad(x, (0, width % 2, 0, height % 2))
        parts = [(0, 0, False), (1, 0, True), (0, 1, False), (1, 1, True)]
        seqs = []
        for di, dj, by_column in parts:
            sub = padded[:, :, di::2, dj::2]
            seqs.append((sub.transpose(2, 3) if by_column else sub).flatten(2))

        def merge(ys):
            out = torch.zeros_like(padded)
            hs, ws = padded.shape[2] // 2, padded.shape[3] // 2
            for y, (di, dj, by_column) in zip(ys, parts):
                sub = (y.view(batch, channels, ws, hs).transpose(2, 3) if by_column
                       else y.view(batch, channels, hs, ws))
                out[:, :, di::2, dj::2] += sub
            return out[:, :, :height, :width]
        return seqs, merge
    raise KeyError(pattern)


def ss2d_reference(module, x):
    """The SS2D forward in float64, step by step."""
    height, width = x.shape[2:]
    h = module.in_proj(x)
    if module.gated:
        h, z = h.chunk(2, dim=1)
    h = F.silu(module.conv2d(h))
    seqs, merge = sequences(module.scan, h)
    ys = routes_reference(module, torch.stack(seqs, dim=1))
    y = merge(list(ys.unbind(1)))
    assert y.shape[2:] == (height, width)
    y = module.out_norm(y)
    if module.gated:
        y = y * F.silu(z)
    return module.out_proj(y)


def randomise(module, seed=0):
    """Random values everywhere (the inits leave structure the comparison could miss)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        module.A_logs.copy_(torch.rand(module.A_logs.shape, generator=generator))
    return module


# ------------------------------------------------------------------ SelectiveScanRoutes
def test_routes_parameters_have_the_official_names_and_shapes():
    core = SelectiveScanRoutes(d_inner=6, d_state=3, dt_rank=2, num_routes=4)
    shapes = {k: tuple(v.shape) for k, v in core.state_dict().items()}
    assert shapes == {'x_proj_weight': (4, 8, 6), 'dt_projs_weight': (4, 6, 2),
                      'dt_projs_bias': (4, 6), 'A_logs': (24, 3), 'Ds': (24, )}
    assert core.A_logs._no_weight_decay and core.Ds._no_weight_decay


def test_routes_inits():
    v0 = SelectiveScanRoutes(8, 4, 2, 2, init='v0')
    assert torch.equal(v0.A_logs, torch.log(torch.arange(1.0, 5.0)).expand(16, 4))
    assert torch.equal(v0.Ds, torch.ones(16))
    dt = F.softplus(v0.dt_projs_bias)
    assert float(dt.min()) >= 1e-4 - 1e-7 and float(dt.max()) <= 0.1 + 1e-6
    bound = 1 / math.sqrt(2)  # dt_scale / sqrt(dt_rank)
    assert float(v0.dt_projs_weight.abs().max()) <= bound
    assert float(v0.x_proj_weight.abs().max()) <= 1 / math.sqrt(8)
    v2 = SelectiveScanRoutes(8, 4, 2, 2, init='v2')
    assert torch.equal(v2.A_logs, torch.zeros(16, 4))
    for name in ('dt_projs_weight', 'dt_projs_bias'):
        value = getattr(v2, name)
        assert float(value.min()) >= 0 and float(value.max()) < 0.1
    with pytest.raises(ValueError, match="unknown SSM init 'v1'"):
        SelectiveScanRoutes(8, 4, 2, 2, init='v1')


def test_inverse_softplus_dt_is_log_uniform_in_range():
    bias = inverse_softplus_dt(20000, dt_min=1e-3, dt_max=0.1)
    dt = F.softplus(bias.double())
    assert float(dt.min()) >= 1e-3 * (1 - 1e-5) and float(dt.max()) <= 0.1 * (1 + 1e-5)
    # log-uniform: the median of log(dt) is the middle of [log 1e-3, log 0.1]
    assert abs(float(dt.log().median()) - math.log(1e-2)) < 0.05
    floored = F.softplus(inverse_softplus_dt(1000, dt_min=1e-6, dt_max=1e-5, dt_floor=1e-4))
    assert torch.allclose(floored, torch.full((1000, ), 1e-4), rtol=1e-4)


def test_scan_routes_matches_the_reference_per_route():
    core = randomise(SelectiveScanRoutes(d_inner=5, d_state=3, dt_rank=2, num_routes=3))
    xs = torch.randn(2, 3, 5, 11)
    out = core.scan_routes(xs)
    core64 = core.double()
    expected = routes_reference(core64, xs.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)
    # a slice of the routes uses the matching parameter slots
    tail = core64.scan_routes(xs[:, 1:].double(), first_route=1)
    torch.testing.assert_close(tail, expected[:, 1:], rtol=1e-5, atol=1e-6)


def test_scan_routes_rejects_bad_shapes():
    core = SelectiveScanRoutes(d_inner=5, d_state=3, dt_rank=2, num_routes=2)
    with pytest.raises(ValueError, match=r'expected \(B, K<=2, 5, L\)'):
        core.scan_routes(torch.randn(1, 2, 4, 7))
    with pytest.raises(ValueError, match='starting at route 1'):
        core.scan_routes(torch.randn(1, 2, 5, 7), first_route=1)


# ------------------------------------------------------------------------------- SS2D
@pytest.mark.parametrize('pattern, gated, size', [
    ('cross', False, (5, 7)),
    ('cross', True, (4, 4)),
    ('atrous', False, (5, 7)),
    ('atrous', True, (6, 3)),
    ('bidirectional', True, (1, 9)),
    ('bidirectional', False, (3, 5)),
])
def test_ss2d_matches_a_hand_written_reference(pattern, gated, size):
    module = randomise(SS2D(d_model=4, d_inner=6, d_state=3, dt_rank=2, scan=pattern,
                            gated=gated, conv_bias=True)).eval()
    assert module.num_routes == {'cross': 4, 'atrous': 4, 'bidirectional': 2}[pattern]
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        out = module(x)
        expected = ss2d_reference(module.double(), x.double())
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def test_ss2d_samples_stay_independent_and_gradients_flow():
    module = randomise(SS2D(d_model=4, d_inner=8, d_state=2, dt_rank=1, scan='cross'))
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    out = module(x)
    with torch.no_grad():
        single = torch.cat([module(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(out, single, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, param in module.named_parameters():
        assert param.grad is not None and bool(param.grad.abs().sum() > 0), name


def test_ss2d_projection_and_norm_factories():
    module = SS2D(d_model=4, d_inner=6, d_state=2, dt_rank=1, gated=True,
                  projection=lambda cin, cout: torch.nn.Conv2d(cin, cout, 1),
                  out_norm=lambda channels: torch.nn.GroupNorm(1, channels))
    assert tuple(module.in_proj.weight.shape) == (12, 4, 1, 1)
    assert tuple(module.out_proj.weight.shape) == (4, 6, 1, 1)
    assert isinstance(module.out_norm, torch.nn.GroupNorm)
    assert module(torch.randn(1, 4, 3, 3)).shape == (1, 4, 3, 3)
    default = SS2D(d_model=4, d_inner=6, d_state=2, dt_rank=1)
    assert default.in_proj.bias is None and tuple(default.in_proj.weight.shape) == (6, 4)


def test_ss2d_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown scan pattern 'spiral'"):
        SS2D(d_model=4, d_inner=6, d_state=2, dt_rank=1, scan='spiral')
    module = SS2D(d_model=4, d_inner=6, d_state=2, dt_rank=1)
    with pytest.raises(ValueError, match=r'SS2D expects \(B, 4, H, W\), got \(1, 3, 5, 5\)'):
        module(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r'got \(4, 5, 5\)'):
        module(torch.randn(4, 5, 5))


def test_linear2d_keeps_the_layout_and_equals_the_1x1_conv():
    """Linear2d on a channels-last map (what LayerNorm2d returns) multiplies it in place
    and returns channels-last; on any layout it is the 1x1 convolution."""
    from mmssm.models.layers.common import LayerNorm2d, Linear2d
    torch.manual_seed(0)
    lin = Linear2d(6, 5).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    last = x.contiguous(memory_format=torch.channels_last)
    for inp in (x, last, x[:, :, :, ::2]):
        got = lin(inp)
        want = F.conv2d(inp.contiguous(), lin.weight[:, :, None, None], lin.bias)
        assert torch.allclose(got, want, rtol=0, atol=1e-12)
    assert lin(last).is_contiguous(memory_format=torch.channels_last)
    normed = LayerNorm2d(6).double()(x)
    assert normed.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(lin(normed), F.conv2d(normed.contiguous(),
                                                lin.weight[:, :, None, None], lin.bias),
                          rtol=0, atol=1e-12)


def test_linear2d_forward_parts_are_the_split_product():
    """forward_parts computes the output's channel groups as separate products, each with
    its activation: the split (activated) forward, each part laid out like the input
    without gaps; sizes that do not add up are refused."""
    from mmssm.models.layers.common import Linear2d
    torch.manual_seed(0)
    for bias in (True, False):
        lin = Linear2d(6, 10, bias=bias).double()
        x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            a, b = lin.forward_parts(inp, (4, 6), (None, 'silu'))
            want_a, want_b = lin(inp).split((4, 6), dim=1)
            torch.testing.assert_close(a, want_a, rtol=0, atol=1e-12)
            torch.testing.assert_close(b, F.silu(want_b), rtol=0, atol=1e-12)
            layout = (torch.channels_last if not inp.is_contiguous()
                      else torch.contiguous_format)
            assert a.is_contiguous(memory_format=layout)
            assert b.is_contiguous(memory_format=layout)
        with pytest.raises(ValueError, match='must sum to 10 output channels'):
            lin.forward_parts(x, (4, 4))
        with pytest.raises(ValueError, match='one activation each'):
            lin.forward_parts(x, (4, 6), ('silu', ))


def test_gated_ss2d_splits_a_plain_in_proj_only():
    """A gated SS2D computes a plain Linear2d in_proj's x and z halves as two products
    (forward_parts); an in_proj with a forward hook (or an overridden forward) is called
    as the module it is, and the function is the same either way."""
    torch.manual_seed(0)
    module = randomise(SS2D(d_model=8, d_inner=12, d_state=2, dt_rank=2, scan='atrous',
                            gated=True)).eval()
    x = torch.randn(1, 8, 5, 6)
    assert module._splits_in_proj()
    calls = []
    with torch.no_grad():
        split = module(x)
        handle = module.in_proj.register_forward_hook(lambda *a: calls.append(1))
        assert not module._splits_in_proj()
        hooked = module(x)
        handle.remove()
    assert calls == [1]
    torch.testing.assert_close(split, hooked, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('pattern, gated', [('cross', False), ('bidirectional', True),
                                            ('atrous', True)])
def test_ss2d_routed_kernel_equals_the_gathered_path(pattern, gated, monkeypatch):
    """CPU float32 inference and training scan the pattern with the routed kernels
    (SelectiveScanRoutes.scan_map; in training the routed forward / backward pair): they
    compute what gather -> scan_routes -> merge does, gradients included ('atrous' on a
    9 x 11 map: padding steps, x_proj applied per route step). A module whose merge is
    overridden keeps the three steps."""
    from mmssm.ops.kernels import backend_available
    if not backend_available('cpu'):
        pytest.skip('mmssm._C is not built')
    module = randomise(SS2D(d_model=8, d_inner=20, d_state=1, dt_rank=3, scan=pattern,
                            gated=gated)).eval()
    calls = []
    real = SS2D.scan_map
    monkeypatch.setattr(SS2D, 'scan_map', lambda self, *a: calls.append(1) or real(self, *a))
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        routed = module(x)
        assert len(calls) == 1
        monkeypatch.setattr(SS2D, 'routed_kernel_applies', lambda self, x: False)
        gathered = module(x)
    assert len(calls) == 1
    torch.testing.assert_close(routed, gathered, rtol=1e-5, atol=1e-5)

    def gradients():
        module.zero_grad()
        inp = x.clone().requires_grad_()
        (module(inp) * torch.linspace(-1, 1, 2 * 8 * 9 * 11).view(2, 8, 9, 11)).sum().backward()
        return [inp.grad] + [p.grad.clone() for p in module.parameters()]

    module.train()
    gathered = gradients()  # (routed_kernel_applies is still patched to False)
    monkeypatch.undo()
    monkeypatch.setattr(SS2D, 'scan_map', lambda self, *a: calls.append(1) or real(self, *a))
    routed = gradients()
    assert len(calls) == 2
    for got, want in zip(routed, gathered):
        scale = want.abs().max().item() + 1e-3
        torch.testing.assert_close(got / scale, want / scale, rtol=1e-4, atol=1e-5)
    module.merge_routes = module.merge_routes  # an instance-level merge (parity helpers)
    with torch.no_grad():
        module(x)
    assert len(calls) == 2


def test_linear_fuses_its_activation_and_keeps_the_function():
    """Linear / Linear2d(activation=...) and ChannelMlp compute act(x W^T + b) whichever
    path runs: oneDNN's fused linear in float32 inference, F.linear + act otherwise."""
    from mmssm.models.backbones.vmamba import ChannelMlp
    from mmssm.models.layers import Linear, Linear2d, fusable_activation
    torch.manual_seed(0)
    lin, lin2d = Linear(6, 5), Linear2d(6, 5)
    lin2d.load_state_dict(lin.state_dict())
    x = torch.randn(2, 3, 4, 6)
    nchw = x.permute(0, 3, 1, 2)  # channels-last memory
    for act in (None, 'gelu', 'silu', 'relu'):
        want = F.linear(x.double(), lin.weight.double(), lin.bias.double())
        want = want if act is None else getattr(F, act)(want)
        with torch.no_grad():
            got = [lin(x, act), lin2d(nchw, act).permute(0, 2, 3, 1),
                   lin2d(nchw.contiguous(), act).permute(0, 2, 3, 1)]
        got.append(lin(x.requires_grad_(), act))
        for out in got:
            torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        lin(x, 'tanh')
    assert [fusable_activation(m) for m in (torch.nn.GELU(), torch.nn.GELU('tanh'),
                                            torch.nn.SiLU(), torch.nn.ReLU(),
                                            torch.nn.Sigmoid())] == [
                                                'gelu', None, 'silu', 'relu', None]
    mlp = ChannelMlp(6, 12, drop=0.5)
    with torch.no_grad():
        fused = mlp.eval()(nchw)
        plain = mlp.fc2(mlp.act(mlp.fc1(nchw)))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    mlp.train()
    torch.manual_seed(1)
    with torch.no_grad():
        dropped = mlp(nchw)  # training: dropout between act and fc2, so nothing is fused
    assert not torch.allclose(dropped, fused, atol=1e-3)


def test_linear_runs_onednn_where_it_applies(monkeypatch):
    import mmssm.ops.linear as linear_op
    seen = []
    real = linear_op._onednn_linear

    def spy():
        fused = real()
        return None if fused is None else (
            lambda *a: seen.append(a[3]) or fused(*a))

    monkeypatch.setattr(linear_op, '_onednn_linear', spy)
    w, b = torch.randn(5, 6), torch.randn(5)
    x = torch.randn(3, 6)
    with torch.no_grad():
        linear_op.linear(x, w, b, 'gelu')
        linear_op.linear(x.double(), w.double(), b.double())
        linear_op.linear(x, w, b, backend='torch')
        with torch.autocast('cpu', dtype=torch.bfloat16):
            linear_op.linear(x, w, b)
    linear_op.linear(x, w.requires_grad_(), b)
    if real() is None:
        assert seen == []
    else:
        assert seen == ['gelu']


def test_linear_without_onednn_activates_its_fresh_output_in_place(monkeypatch):
    """Where oneDNN's linear is not used (no AVX-512, or no oneDNN), inference runs
    F.linear and applies the activation to that fresh output in place: the same function
    as the out-of-place composite (for 'gelu' mmssm.ops.activation's, the CPU kernel),
    the input and the weights untouched."""
    import mmssm.ops.linear as linear_op
    monkeypatch.setattr(linear_op, '_onednn_linear', lambda: None)
    torch.manual_seed(0)
    x, w, b = torch.randn(4, 6), torch.randn(5, 6), torch.randn(5)
    kept = [t.clone() for t in (x, w, b)]
    for act in (None, 'gelu', 'silu', 'relu'):
        want = linear_op.activate(F.linear(x, w, b), act)
        with torch.no_grad():
            got = linear_op.linear(x, w, b, act)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for before, after in zip(kept, (x, w, b)):
        assert torch.equal(before, after)


def test_updates_in_place_only_where_no_graph_or_trace_records_it():
    from mmssm.models.layers import updates_in_place
    x, w = torch.randn(3), torch.randn(3, requires_grad=True)
    with torch.no_grad():
        assert updates_in_place(x) and updates_in_place(x, w)
    assert updates_in_place(x)  # nothing needs a gradient
    assert not updates_in_place(x, w)
    with torch.inference_mode():
        assert updates_in_place(torch.randn(3))
    seen = []

    def record(t):
        seen.append(updates_in_place(t))
        return t * 2

    with torch.no_grad():
        torch.jit.trace(record, (x,), check_trace=False)
    assert seen == [False]


@pytest.mark.parametrize('gated', [False, True])
def test_ss2d_inference_in_place_keeps_the_input_and_the_function(gated):
    """Inference (no graph) overwrites the mixer's own intermediate maps; its input is
    untouched and the output equals the graph-building path's, also where an identity
    projection makes the gate a view of the input."""
    for projection in (None, lambda cin, cout: torch.nn.Identity()):
        d_model = 12 if (projection and gated) else (6 if projection else 4)
        module = randomise(SS2D(d_model=d_model, d_inner=6, d_state=2, dt_rank=1,
                                gated=gated, projection=projection)).eval()
        x = torch.randn(2, d_model, 5, 4)
        x_before = x.clone()
        with torch.no_grad():
            inference = module(x)
        assert torch.equal(x, x_before)
        with torch.enable_grad():
            graph = module(x.clone().requires_grad_())
        torch.testing.assert_close(inference, graph.detach(), rtol=1e-5, atol=1e-5)


def test_squeeze_excite_gate_equals_its_1x1_convolutions():
    from mmssm.models.layers import SqueezeExcite
    for bias in (True, False):
        module = SqueezeExcite(8, 3, bias=bias)
        with torch.no_grad():
            for param in module.parameters():
                param.normal_(0, 0.5)
        x = torch.randn(2, 8, 5, 3)
        squeezed = x.mean((2, 3), keepdim=True)
        hidden = F.relu(F.conv2d(squeezed, module.conv_reduce.weight, module.conv_reduce.bias))
        gate = torch.sigmoid(F.conv2d(hidden, module.conv_expand.weight,
                                      module.conv_expand.bias))
        with torch.no_grad():
            assert module.gate(x).shape == (2, 8, 1, 1)
            torch.testing.assert_close(module.gate(x), gate, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(module(x), x * gate, rtol=1e-6, atol=1e-6)


def test_updates_in_place_sees_trainable_modules():
    from mmssm.models.layers import updates_in_place
    module = torch.nn.Linear(3, 3)
    x = torch.randn(2, 3)
    assert not updates_in_place(x, module)  # grad mode and a trainable parameter
    module.requires_grad_(False)
    assert updates_in_place(x, module)
    with torch.no_grad():
        assert updates_in_place(x, module.requires_grad_(True))
