"""gather_routes / merge_routes: the pattern-level gather and merge.

For permutation patterns ('cross', 'bidirectional', 'row') on the torch path they move
data with copies, flips and transposes instead of the index map; they must equal
scan_gather / scan_merge with the pattern's map exactly (values and gradients), for any
batch, odd and 1-wide maps, and non-contiguous inputs. The other patterns go through the
index map, whose validity is checked once per map (the cached check still rejects a
bad map every time).
"""
import pytest
import torch

from mmssm.ops.scan_patterns import (SCAN_PATTERNS, gather_routes, merge_routes,
                                     scan_gather, scan_merge)

PERMUTATIONS = [name for name, p in SCAN_PATTERNS.items() if p.is_permutation]
SIZES = [(1, 5, 7), (2, 4, 4), (2, 1, 9), (1, 6, 1)]


def test_the_permutation_patterns():
    assert set(PERMUTATIONS) == {'row', 'cross', 'bidirectional'}


def _noncontiguous(x):
    return x.transpose(2, 3).contiguous().transpose(2, 3) if x.dim() == 4 else x


@pytest.mark.parametrize('name', sorted(SCAN_PATTERNS))
@pytest.mark.parametrize('size', SIZES, ids=str)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_equal_to_the_index_map(name, size, layout):
    batch, h, w = size
    pattern = SCAN_PATTERNS[name]
    x = torch.randn(batch, 3, h, w, dtype=torch.float64)
    if layout == 'channels_last':
        x = _noncontiguous(x)
    index = pattern.index(h, w)
    expected = scan_gather(x, index)
    got = gather_routes(x, name)
    assert torch.equal(got, expected)
    ys = torch.randn_like(expected)
    assert torch.allclose(merge_routes(ys, pattern, (h, w)), scan_merge(ys, index, (h, w)),
                          rtol=0, atol=1e-12)


@pytest.mark.parametrize('name', PERMUTATIONS)
def test_fast_path_is_contiguous_and_differentiable(name):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    routes = gather_routes(x, name)
    assert routes.is_contiguous()
    ys = torch.randn_like(routes)
    (routes * ys).sum().backward()
    # d/dx <gather(x), ys> = merge(ys): the adjoint pair
    assert torch.allclose(x.grad, merge_routes(ys, name, (4, 5)), rtol=0, atol=1e-12)
    ys.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: merge_routes(t, name, (4, 5)), (ys, ))
    assert torch.autograd.gradcheck(lambda t: gather_routes(t, name), (x.detach()
                                                                        .requires_grad_(), ))


def test_one_dimensional_maps():
    x = torch.randn(2, 3, 11)
    routes = gather_routes(x, 'bidirectional')
    assert torch.equal(routes[:, 0], x) and torch.equal(routes[:, 1], x.flip(-1))
    y = merge_routes(routes, 'bidirectional', (11, ))
    assert y.shape == (2, 3, 11) and torch.allclose(y, 2 * x)


def test_wrong_shapes_are_named():
    with pytest.raises(ValueError, match="pattern 'cross'"):
        merge_routes(torch.zeros(1, 2, 3, 16), 'cross', (4, 4))
    with pytest.raises(ValueError, match='do not cover a 4x5 map'):
        merge_routes(torch.zeros(1, 4, 3, 16), 'cross', (4, 5))
    with pytest.raises(ValueError, match='unknown scan pattern'):
        gather_routes(torch.zeros(1, 3, 4, 4), 'diagonal')


def test_bad_index_is_rejected_every_time():
    x = torch.randn(1, 2, 2, 2)
    bad = torch.tensor([[0, 1, 2, 4]])
    for _ in range(2):
        with pytest.raises(ValueError, match='outside a map of 4'):
            scan_gather(x, bad)
    bad[0, 3] = 3  # fixed in place: checked again, now valid
    assert scan_gather(x, bad).shape == (1, 1, 2, 4)
