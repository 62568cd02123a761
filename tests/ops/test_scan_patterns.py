"""Scan patterns (mmssm/ops/scan_patterns.py) and their Triton kernels.

* The index maps against per-pixel loops written from the route definitions in the
  specs and against the specs' worked examples (VMamba cross scan, specs/vmamba.md
  §1.6; EfficientVMamba ES2D, specs/efficientvmamba.md §1.4; MSVMamba's
  low-resolution route, specs/msvmamba.md §1.5).
* ``scan_gather`` / ``scan_merge`` (torch path) against explicit loops and the specs'
  merge formulas, and their adjointness ``<gather(x), y> == <x, merge(y)>``.
* The Triton gather / merge kernels (mmssm/ops/scan_patterns_triton.py) against the
  torch path, forward and backward, every pattern, odd sizes, fp32 / bf16, strided
  inputs. Without a GPU they run in Triton's interpreter on CPU tensors: the module is
  loaded a second time under a private name with ``TRITON_INTERPRET=1`` set only while
  its kernels are defined (triton picks interpreter vs compiler when ``@triton.jit``
  runs), so nothing else in the process is affected. Skipped if triton is missing.
"""
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from mmssm.ops import scan_patterns
from mmssm.ops.scan_patterns import (SCAN_PATTERNS, Segment, atrous_index, bidirectional_index,
                                     cross_scan_index, get_scan_pattern, multiscale_low_index,
                                     resolve_gather_backend, row_major_index, scan_gather,
                                     scan_merge)

KERNELS_FILE = Path(scan_patterns.__file__).with_name('scan_patterns_triton.py')
ODD_SIZES = [(1, 1), (1, 5), (4, 1), (2, 3), (3, 2), (5, 3), (3, 5), (7, 7), (4, 6),
             (6, 9), (13, 18)]


# -------------------------------------------------------------------------------------
# Routes written as per-pixel loops from the specs' definitions (independent of the
# tensor code under test). Each returns a list of routes, each a list of flat row-major
# pixel positions (-1 = padding step).
# -------------------------------------------------------------------------------------
def loop_cross(h, w):
    row = [i * w + j for i in range(h) for j in range(w)]
    col = [i * w + j for j in range(w) for i in range(h)]
    return [row, col, row[::-1], col[::-1]]


def loop_atrous(h, w):
    hp, wp = h + h % 2, w + w % 2

    def pix(i, j):
        return i * w + j if i < h and j < w else -1

    h2, w2 = hp // 2, wp // 2
    route0 = [pix(2 * a, 2 * b) for a in range(h2) for b in range(w2)]
    route1 = [pix(2 * a + 1, 2 * b) for b in range(w2) for a in range(h2)]
    route2 = [pix(2 * a, 2 * b + 1) for a in range(h2) for b in range(w2)]
    route3 = [pix(2 * a + 1, 2 * b + 1) for b in range(w2) for a in range(h2)]
    return [route0, route1, route2, route3]


def loop_multiscale_low(h, w):
    row = [i * w + j for i in range(h) for j in range(w)]
    col = [i * w + j for j in range(w) for i in range(h)]
    return [row[::-1] + col + col[::-1]]


def loop_bidirectional(length):
    return [list(range(length)), list(range(length))[::-1]]


def loop_row(h, w):
    return [[i * w + j for i in range(h) for j in range(w)]]


# name -> (index builder (h, w), loop routes (h, w), spatial size of the map)
PATTERNS = {
    'cross': (cross_scan_index, loop_cross, lambda h, w: (h, w)),
    'atrous': (atrous_index, loop_atrous, lambda h, w: (h, w)),
    'multiscale_low': (multiscale_low_index, loop_multiscale_low, lambda h, w: (h, w)),
    'bidirectional': (lambda h, w: bidirectional_index(h * w),
                      lambda h, w: loop_bidirectional(h * w), lambda h, w: (h * w, )),
    'row': (row_major_index, loop_row, lambda h, w: (h, w)),
}


def routes_of(index):
    return index.tolist()


@pytest.mark.parametrize('name', sorted(PATTERNS))
@pytest.mark.parametrize('h,w', ODD_SIZES)
def test_index_maps_match_loops(name, h, w):
    build, loops, _ = PATTERNS[name]
    index = build(h, w)
    assert index.dtype == torch.long
    assert routes_of(index) == loops(h, w)


def test_cross_scan_worked_example():
    # specs/vmamba.md §1.6: H=2, W=3.
    assert routes_of(cross_scan_index(2, 3)) == [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5],
                                                 [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]


def test_atrous_worked_examples():
    # specs/efficientvmamba.md §1.4, H=4, W=6: route 1 visits (1,0),(3,0),(1,2),(3,2),
    # (1,4),(3,4); route 2 starts (0,1),(0,3),(0,5),(2,1).
    index = atrous_index(4, 6)
    assert index.shape == (4, 6)
    assert index[1].tolist() == [1 * 6 + 0, 3 * 6 + 0, 1 * 6 + 2, 3 * 6 + 2, 1 * 6 + 4,
                                 3 * 6 + 4]
    assert index[2, :4].tolist() == [0 * 6 + 1, 0 * 6 + 3, 0 * 6 + 5, 2 * 6 + 1]
    # 5x3 map: route 1 is (1,0),(3,0),pad,(1,2),(3,2),pad.
    assert atrous_index(5, 3)[1].tolist() == [3, 9, -1, 5, 11, -1]
    # every real pixel is visited exactly once, by route k(h mod 2, w mod 2)
    for h, w in ODD_SIZES:
        index = atrous_index(h, w)
        real = index[index >= 0]
        assert sorted(real.tolist()) == list(range(h * w))
        for k in range(4):
            for p in index[k][index[k] >= 0].tolist():
                i, j = divmod(p, w)
                assert k == {(0, 0): 0, (1, 0): 1, (0, 1): 2, (1, 1): 3}[(i % 2, j % 2)]


def test_multiscale_low_worked_example():
    # specs/msvmamba.md §1.5 on a 2x3 low-resolution map: seg A = reversed row-major,
    # seg B = column-major (t = c*h1 + r), seg C = reversed seg B, one sequence.
    assert routes_of(multiscale_low_index(2, 3)) == [[5, 4, 3, 2, 1, 0, 0, 3, 1, 4, 2, 5,
                                                      5, 2, 4, 1, 3, 0]]


def test_index_maps_are_cached_per_device():
    assert cross_scan_index(5, 7) is cross_scan_index(5, 7)
    assert cross_scan_index(5, 7, 'cpu') is cross_scan_index(5, 7)


# -------------------------------------------------------------------------------------
# torch path: gather / merge against loops and the specs' merge formulas
# -------------------------------------------------------------------------------------
def loop_gather(x, routes):
    batch, channels = x.shape[:2]
    flat = x.reshape(batch, channels, -1)
    out = torch.zeros(batch, len(routes), channels, len(routes[0]), dtype=x.dtype)
    for k, route in enumerate(routes):
        for step, p in enumerate(route):
            if p >= 0:
                out[:, k, :, step] = flat[:, :, p]
    return out


def loop_merge(ys, routes, pixels):
    batch, _, channels, _ = ys.shape
    out = torch.zeros(batch, channels, pixels, dtype=ys.dtype)
    for p in range(pixels):
        for k, route in enumerate(routes):
            for step, q in enumerate(route):
                if q == p:
                    out[:, :, p] += ys[:, k, :, step]
    return out


@pytest.mark.parametrize('name', sorted(PATTERNS))
@pytest.mark.parametrize('h,w', [(1, 1), (2, 3), (5, 3), (4, 6), (7, 5)])
def test_torch_gather_merge_match_loops(name, h, w):
    build, loops, sizer = PATTERNS[name]
    index, routes, size = build(h, w), loops(h, w), sizer(h, w)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(scan_gather(x, index, backend='torch'), loop_gather(x, routes),
                               rtol=0, atol=0)
    ys = torch.randn(2, index.shape[0], 3, index.shape[1], dtype=torch.float64)
    merged = scan_merge(ys, index, size, backend='torch')
    assert merged.shape == (2, 3, *size)
    torch.testing.assert_close(merged.reshape(2, 3, -1), loop_merge(ys, routes, h * w))


@pytest.mark.parametrize('h,w', [(2, 3), (5, 4), (13, 18)])
def test_merge_formulas_from_specs(h, w):
    L = h * w
    # VMamba cross-merge: y(h, w) = ys0[hW+w] + ys2[L-1-(hW+w)] + ys1[wH+h] + ys3[L-1-(wH+h)]
    ys = torch.randn(1, 4, 2, L, dtype=torch.float64)
    expect = torch.zeros(1, 2, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            r, c = i * w + j, j * h + i
            expect[..., i, j] = (ys[:, 0, :, r] + ys[:, 2, :, L - 1 - r] + ys[:, 1, :, c]
                                 + ys[:, 3, :, L - 1 - c])
    torch.testing.assert_close(scan_merge(ys, cross_scan_index(h, w), (h, w), backend='torch'),
                               expect)
    # MSVMamba low-res merge: A flipped -> (h, w); B -> (w, h)^T; C flipped -> (w, h)^T.
    y1 = torch.randn(1, 1, 2, 3 * L, dtype=torch.float64)[:, 0]
    seg_a, seg_b, seg_c = y1.split(L, dim=2)
    expect = (seg_a.flip(2).reshape(1, 2, h, w) + seg_b.reshape(1, 2, w, h).transpose(2, 3)
              + seg_c.flip(2).reshape(1, 2, w, h).transpose(2, 3))
    torch.testing.assert_close(
        scan_merge(y1[:, None], multiscale_low_index(h, w), (h, w), backend='torch'), expect)
    # ES2D merge: each pixel gets route k(h mod 2, w mod 2) at its own sub-grid position.
    index = atrous_index(h, w)
    ys = torch.randn(1, 4, 2, index.shape[1], dtype=torch.float64)
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    expect = torch.zeros(1, 2, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            k = {(0, 0): 0, (1, 0): 1, (0, 1): 2, (1, 1): 3}[(i % 2, j % 2)]
            a, b = i // 2, j // 2
            step = a * w2 + b if k in (0, 2) else b * h2 + a
            expect[..., i, j] = ys[:, k, :, step]
    torch.testing.assert_close(scan_merge(ys, index, (h, w), backend='torch'), expect)


@pytest.mark.parametrize('name', sorted(PATTERNS))
def test_gather_merge_adjoint(name):
    build, _, sizer = PATTERNS[name]
    for h, w in ODD_SIZES:
        index, size = build(h, w), sizer(h, w)
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        y = torch.randn(2, index.shape[0], 3, index.shape[1], dtype=torch.float64)
        lhs = (scan_gather(x, index, backend='torch') * y).sum()
        rhs = (x * scan_merge(y, index, size, backend='torch')).sum()
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_torch_path_autograd_is_the_adjoint():
    index = cross_scan_index(3, 5)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 4, 4, 15, dtype=torch.float64)
    (gx, ) = torch.autograd.grad(scan_gather(x, index, backend='torch'), x, grad)
    torch.testing.assert_close(gx, scan_merge(grad, index, (3, 5), backend='torch'))


def test_bad_arguments_raise_clear_errors():
    index = cross_scan_index(2, 3)
    with pytest.raises(ValueError, match='outside a map of 4'):
        scan_gather(torch.randn(1, 2, 2, 2), index, backend='torch')
    with pytest.raises(ValueError, match='routes of length'):
        scan_merge(torch.randn(1, 3, 2, 6), index, (2, 3), backend='torch')
    with pytest.raises(ValueError, match=r'\(B, K, C, L'):
        scan_merge(torch.randn(3, 2, 6), index, (2, 3))
    with pytest.raises(ValueError, match='x must be'):
        scan_gather(torch.randn(2, 6), index)
    with pytest.raises(ValueError, match='unknown backend'):
        scan_gather(torch.randn(1, 2, 2, 3), index, backend='cuda')
    with pytest.raises(ValueError, match='non-empty'):
        cross_scan_index(0, 3)


def test_default_backend_is_torch_on_cpu(monkeypatch):
    x = torch.randn(1, 2, 3, 3)
    monkeypatch.delenv('MMSSM_DISABLE_TRITON', raising=False)
    assert resolve_gather_backend(x) == 'torch'
    assert resolve_gather_backend(x, 'torch') == 'torch'


# -------------------------------------------------------------------------------------
# Triton kernels (interpreted on CPU)
# -------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def interpreted():
    """scan_patterns_triton loaded under a private name with TRITON_INTERPRET=1 while its
    kernels are defined (the regular module, if imported, keeps compiled kernels)."""
    pytest.importorskip('triton')
    saved = os.environ.get('TRITON_INTERPRET')
    os.environ['TRITON_INTERPRET'] = '1'
    try:
        spec = importlib.util.spec_from_file_location('_mmssm_scan_patterns_triton_interp',
                                                      KERNELS_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del os.environ['TRITON_INTERPRET']
        else:
            os.environ['TRITON_INTERPRET'] = saved
    return module


TRITON_SIZES = [(1, 1), (2, 3), (5, 3), (11, 13)]  # 11x13: several position blocks
TOLERANCE = {torch.float32: dict(rtol=1e-6, atol=1e-6),
             torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('name', sorted(PATTERNS))
def test_triton_matches_torch(interpreted, name, dtype):
    build, _, sizer = PATTERNS[name]
    for h, w in TRITON_SIZES:
        index, size = build(h, w), sizer(h, w)
        routes, length = index.shape
        channels = 11  # > BLOCK_C: several channel blocks, the last one partial
        x = torch.randn(2, channels, *size, dtype=dtype, requires_grad=True)
        ys = torch.randn(2, routes, channels, length, dtype=dtype, requires_grad=True)

        got = interpreted.triton_scan_gather(x, index)
        ref = scan_gather(x, index, backend='torch')
        assert got.shape == ref.shape and got.dtype == dtype and got.is_contiguous()
        torch.testing.assert_close(got, ref, rtol=0, atol=0)  # a copy: exact
        grad = torch.randn_like(ref)
        (gx, ) = torch.autograd.grad(got, x, grad)
        assert gx.dtype == dtype
        gx_ref = scan_merge(grad.float(), index, size, backend='torch')  # fp32 sum
        torch.testing.assert_close(gx.float(), gx_ref, **TOLERANCE[dtype])

        got = interpreted.triton_scan_merge(ys, index, size)
        ref = scan_merge(ys.float(), index, size, backend='torch')
        assert got.shape == (2, channels, *size) and got.dtype == dtype
        torch.testing.assert_close(got.float(), ref, **TOLERANCE[dtype])
        grad = torch.randn(ref.shape).to(dtype)
        (gys, ) = torch.autograd.grad(got, ys, grad)
        (gys_ref, ) = torch.autograd.grad(scan_merge(ys, index, size, backend='torch'), ys,
                                          grad)
        torch.testing.assert_close(gys, gys_ref, rtol=0, atol=0)


def test_triton_strided_inputs(interpreted):
    # channels-last maps (MSVMamba convs on permuted inputs), a transposed (B, C, L)
    # sequence (Vim's in_proj output), strided / sliced route outputs (MSVMamba's
    # out_norm transposes, MobileMamba's ys[:, :1]).
    index = cross_scan_index(5, 7)
    x = torch.randn(2, 6, 5, 7).to(memory_format=torch.channels_last)
    torch.testing.assert_close(interpreted.triton_scan_gather(x, index),
                               scan_gather(x.contiguous(), index, backend='torch'))
    seq = torch.randn(2, 9, 6).transpose(1, 2)  # (B, C=6, L=9), channel stride 1
    bidi = bidirectional_index(9)
    torch.testing.assert_close(interpreted.triton_scan_gather(seq, bidi),
                               scan_gather(seq.contiguous(), bidi, backend='torch'))
    ys = torch.randn(2, 4, 35, 6).transpose(2, 3)  # (B, K, C, L) with stride_l = C
    torch.testing.assert_close(interpreted.triton_scan_merge(ys, index, (5, 7)),
                               scan_merge(ys.contiguous(), index, (5, 7), backend='torch'))
    part = ys[:, 1:3]
    torch.testing.assert_close(interpreted.triton_scan_merge(part, index[1:3], (5, 7)),
                               scan_merge(part.contiguous(), index[1:3], (5, 7),
                                          backend='torch'))


def test_triton_double_backward_and_adjoint(interpreted):
    index = atrous_index(5, 3)
    x = torch.randn(1, 3, 5, 3, dtype=torch.float32, requires_grad=True)
    y = torch.randn(1, 4, 3, index.shape[1])
    lhs = (interpreted.triton_scan_gather(x, index) * y).sum()
    rhs = (x * interpreted.triton_scan_merge(y, index, (5, 3))).sum()
    torch.testing.assert_close(lhs, rhs)
    # gradient of a gradient goes through the kernels again (merge -> gather)
    (gx, ) = torch.autograd.grad(interpreted.triton_scan_gather(x, index).pow(2).sum(), x,
                                 create_graph=True)
    (ggx, ) = torch.autograd.grad(gx.sum(), x)
    (gx_ref, ) = torch.autograd.grad(scan_gather(x, index, backend='torch').pow(2).sum(), x,
                                     create_graph=True)
    (ggx_ref, ) = torch.autograd.grad(gx_ref.sum(), x)
    torch.testing.assert_close(ggx, ggx_ref)


def test_triton_index_plan(interpreted):
    hits = {'cross': 4, 'multiscale_low': 3, 'bidirectional': 2, 'atrous': 1, 'row': 1}
    for name, expected in hits.items():
        build, loops, _ = PATTERNS[name]
        plan = interpreted.index_plan(build(5, 3), 15, torch.device('cpu'))
        assert plan.hits == expected
        # the inverse lists every (k, l) visit of each pixel, in increasing flat order
        flat = [p for route in loops(5, 3) for p in route]
        for p in range(15):
            visits = [f for f, q in enumerate(flat) if q == p]
            assert plan.inverse[:, p].tolist() == visits + [-1] * (expected - len(visits))
    # cached per tensor; an in-place change of the index is noticed
    index = row_major_index(2, 3).clone()
    first = interpreted.index_plan(index, 6, torch.device('cpu'))
    assert interpreted.index_plan(index, 6, torch.device('cpu')) is first
    index[0, 0] = -1
    assert interpreted.index_plan(index, 6, torch.device('cpu')).inverse[0, 0] == -1
    with pytest.raises(ValueError, match='outside a map of 6'):
        interpreted.index_plan(torch.tensor([[0, 6]]), 6, torch.device('cpu'))
    with pytest.raises(TypeError, match='float32, float16 and bfloat16'):
        interpreted.triton_scan_gather(torch.randn(1, 1, 6, dtype=torch.float64), index)


def test_backend_triton_resolves_when_available(interpreted):
    assert resolve_gather_backend(torch.randn(1, 2, 3), 'triton') == 'triton'


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_dispatch_uses_triton_and_matches_torch(monkeypatch, dtype):
    pytest.importorskip('triton')
    monkeypatch.delenv('MMSSM_DISABLE_TRITON', raising=False)
    for name, (build, _, sizer) in PATTERNS.items():
        for h, w in [(56, 56), (7, 7), (25, 40), (5, 3)]:
            index, size = build(h, w), sizer(h, w)
            index = index.cuda()
            x = torch.randn(2, 96, *size, device='cuda', dtype=dtype, requires_grad=True)
            assert resolve_gather_backend(x) == 'triton'
            out = scan_gather(x, index)
            torch.testing.assert_close(out, scan_gather(x, index, backend='torch'))
            merged = scan_merge(out.float(), index, size)
            torch.testing.assert_close(merged,
                                       scan_merge(out.float(), index, size, backend='torch'))
            (gx, ) = torch.autograd.grad(out, x, torch.ones_like(out))
            torch.testing.assert_close(gx.float(), scan_merge(
                torch.ones_like(out).float(), index, size, backend='torch'))
    monkeypatch.setenv('MMSSM_DISABLE_TRITON', '1')
    assert resolve_gather_backend(torch.ones(1, device='cuda')) == 'torch'


# ------------------------------------------------------------------ patterns as data
def test_every_pattern_is_described_once_as_data():
    assert set(SCAN_PATTERNS) == {'row', 'cross', 'bidirectional', 'atrous', 'multiscale_low'}
    public = {'row': row_major_index, 'cross': cross_scan_index, 'atrous': atrous_index,
              'multiscale_low': multiscale_low_index,
              'bidirectional': lambda h, w: bidirectional_index(h * w)}
    for name, pattern in SCAN_PATTERNS.items():
        assert get_scan_pattern(name) is pattern
        for h, w in ((1, 1), (1, 6), (4, 4), (5, 7)):
            index = pattern.index(h, w)
            assert index.shape[0] == pattern.num_routes
            assert torch.equal(index, pattern.build_index(h, w))  # cached == rebuilt
            assert torch.equal(index, public[name](h, w))
    with pytest.raises(ValueError, match="unknown scan pattern 'spiral'"):
        get_scan_pattern('spiral')


def test_is_permutation_means_flips_and_transposes():
    h, w = 3, 5
    grid = torch.arange(h * w).view(h, w)
    views = {tuple(v.tolist()) for v in (grid.flatten(), grid.t().flatten(),
                                         grid.flatten().flip(0), grid.t().flatten().flip(0))}
    for name, pattern in SCAN_PATTERNS.items():
        routes = {tuple(r.tolist()) for r in pattern.index(h, w)}
        assert pattern.is_permutation == routes.issubset(views), name
    assert [n for n, p in SCAN_PATTERNS.items() if p.is_permutation] == [
        'row', 'cross', 'bidirectional']


def test_segments_are_validated():
    for bad in (dict(order='diagonal'), dict(step=0), dict(step=2, offset=(2, 0))):
        with pytest.raises(ValueError, match='invalid segment'):
            Segment(**bad)
    # a strided segment reads its sub-lattice of the (-1 padded) map, here column-major
    padded = torch.cat([torch.arange(12).view(3, 4), torch.full((1, 4), -1)])
    assert Segment('col', step=2, offset=(1, 0)).index(padded).tolist() == [4, -1, 6, -1]
    assert Segment('row', reverse=True).index(padded[:3]).tolist() == list(range(11, -1, -1))
