"""ONNX export: the scan lowering against the reference, every family's backbone exported
with dynamic axes and run in ONNX Runtime at several sizes, errors that name the part."""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from mmssm.deployment import (ExportError, RuntimeSession, export_onnx,  # noqa: E402
                              flatten_outputs, output_names, read_metadata,
                              unflatten_outputs, verify_onnx)
from mmssm.models.backbones.efficient_vmamba import EfficientVMamba  # noqa: E402
from mmssm.models.backbones.mobilemamba import MobileMamba  # noqa: E402
from mmssm.models.backbones.msvmamba import MSVMamba  # noqa: E402
from mmssm.models.backbones.vim import Vim  # noqa: E402
from mmssm.models.backbones.vmamba import VMamba  # noqa: E402
from mmssm.ops import selective_scan  # noqa: E402
from mmssm.ops import scan_lowering  # noqa: E402
from mmssm.ops import scan_patterns as sp  # noqa: E402

TOL = 1e-4

BACKBONES = {
    'vmamba_v2': lambda: VMamba(arch=dict(
        depths=(1, 1, 1, 1), dims=8, d_state=1, ssm_ratio=1.0, mlp_ratio=2.0, gated=False,
        conv_bias=False, patch_embed='v2', downsample='v3')),
    'vmamba_v0': lambda: VMamba(arch=dict(
        depths=(1, 1, 1, 1), dims=8, d_state=4, ssm_ratio=2.0, mlp_ratio=0.0, gated=True,
        conv_bias=True, patch_embed='v1', downsample='v1')),
    'msvmamba': lambda: MSVMamba(arch=dict(dims=8, depths=(1, 1, 1, 1))),
    'efficientvmamba': lambda: EfficientVMamba(arch=dict(dims=8, depths=(1, 1, 1, 1))),
    'mobilemamba': lambda: MobileMamba(arch=dict(embed_dims=[16, 32, 48], depths=[1, 1, 1]),
                                       out_indices=(0, 1, 2, 3)),
    'vim': lambda: Vim(arch=dict(embed_dims=16, depth=2), img_size=64, out_indices=(0, 1),
                       with_cls_token=False),
    'vim_cls_token': lambda: Vim(arch=dict(embed_dims=16, depth=2), img_size=64,
                                 out_type='cls_token'),
    'vim_rope': lambda: Vim(arch=dict(embed_dims=16, depth=2), img_size=64, out_indices=(1, ),
                            with_cls_token=False, use_rope=True, rope_residual=True,
                            feature_type='residual'),
}


def _scan_inputs(batch, dim, dstate, groups, length, gate, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=torch.randn(batch, dim, length, generator=g) * 0.5,
        A=-torch.rand(dim, dstate, generator=g) * 4 - 0.1,
        B=torch.randn(batch, groups, dstate, length, generator=g),
        C=torch.randn(batch, groups, dstate, length, generator=g),
        D=torch.randn(dim, generator=g),
        z=torch.randn(batch, dim, length, generator=g) if gate else None,
        delta_bias=torch.randn(dim, generator=g) * 0.5)


def _rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# ------------------------------------------------------------------ the lowering itself
@pytest.mark.parametrize('batch,dim,dstate,groups,length,gate,softplus', [
    (2, 8, 1, 4, 37, False, True),  # VMamba-like: N = 1, one group per route, padded
    (1, 6, 16, 1, 197, True, True),  # Vim-like: N = 16, gate
    (1, 4, 2, 2, 1, False, True),  # a single step
    (1, 4, 2, 2, 64, False, False),  # no softplus, no padding
    (1, 4, 3, 1, 4099, False, True),  # many chunks: level 2 and the doubling carry
])
def test_scan_lowering_matches_reference(batch, dim, dstate, groups, length, gate, softplus):
    args = _scan_inputs(batch, dim, dstate, groups, length, gate)
    if not softplus:
        args['delta'], args['delta_bias'] = args['delta'].abs(), args['delta_bias'].abs()
    ref, ref_state = selective_scan(
        **{k: v.double() if v is not None else None for k, v in args.items()},
        delta_softplus=softplus, return_last_state=True, backend='torch')
    out, state = scan_lowering.selective_scan_export(
        **args, delta_softplus=softplus, return_last_state=True)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert _rel(out, ref) < 1e-6
    assert _rel(state, ref_state) < 1e-6
    # float64 input accumulates in float64
    out64 = scan_lowering.selective_scan_export(
        **{k: v.double() if v is not None else None for k, v in args.items()},
        delta_softplus=softplus)
    assert out64.dtype == torch.float64 and _rel(out64, ref) < 1e-12


def test_softplus_matches_torch():
    x = torch.cat([torch.linspace(-120, 120, 2001), torch.tensor([0.0, 19.99, 20.0, 20.01])])
    expected = F.softplus(x.double())
    # float64: exact up to torch's threshold rule (x itself above 20, off by < 2.1e-9)
    assert torch.allclose(scan_lowering.softplus(x.double()), expected, rtol=1e-15, atol=2.1e-9)
    got = scan_lowering.softplus(x).double()  # float32: rounding, plus < 6e-8 absolute
    assert ((got - expected).abs() <= 6e-8 + 2.4e-7 * expected.abs()).all()  # where 1 + e rounds
    assert torch.equal(scan_lowering.softplus(torch.tensor([float('-inf')])), torch.zeros(1))


def test_steps_layout_roundtrip():
    x = torch.arange(2 * 3 * 37, dtype=torch.float32).reshape(2, 3, 37)
    steps = scan_lowering.to_steps(x, 16, fill=-1.0)  # (16, 2, 3, 3)
    assert steps.shape == (16, 2, 3, 3)
    assert steps[5, 1, 2, 1] == x[1, 2, 16 + 5] and steps[15, 0, 0, 2] == -1.0
    assert torch.equal(scan_lowering.from_steps(steps, 37), x)


def _sequential_entering(a, b):
    h, entering = torch.zeros_like(b[..., 0]), []
    for k in range(b.shape[-1]):
        entering.append(h)
        h = a[..., k] * h + b[..., k]
    return torch.stack(entering, -1)


@pytest.mark.parametrize('length', [1, 5, 16, 17, 300])
def test_exclusive_recurrence(length):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(3, 2, length, generator=g, dtype=torch.float64)
    b = torch.randn(3, 2, length, generator=g, dtype=torch.float64)
    got = scan_lowering.exclusive_recurrence(a, b, chunk=4, steps=7)  # 4 * 2**7 >= 300
    assert torch.allclose(got, _sequential_entering(a, b), rtol=1e-12, atol=1e-12)


def test_exclusive_recurrence_capacity_gives_nan():
    a, b = torch.rand(2, 300), torch.randn(2, 300)
    # Beyond chunk * 2**steps the result is NaN, never silently wrong.
    assert torch.isnan(scan_lowering.exclusive_recurrence(a, b, chunk=4, steps=6)).all()
    assert not torch.isnan(scan_lowering.exclusive_recurrence(a, b, chunk=4, steps=7)).any()
    assert scan_lowering.MAX_LENGTH == 2**20


def test_scan_graph_keeps_step_splits_on_the_leading_axis(tmp_path):
    """ONNX Runtime's transpose optimizer must not turn the step Splits of the scan into
    element-wise last-axis Splits (the order of operations after each transpose
    prevents it, see scan_lowering): dt, drive, B and C split on axis 0."""
    import onnx
    import onnxruntime as ort

    class Scan(nn.Module):
        def forward(self, u, delta, B, C):
            return scan_lowering.selective_scan_export(
                u, delta, -torch.ones(8, 1), B, C, torch.ones(8), None, torch.zeros(8), True)

    acts = (torch.randn(1, 8, 64), torch.randn(1, 8, 64), torch.randn(1, 4, 1, 64),
            torch.randn(1, 4, 1, 64))
    path, optimized = str(tmp_path / 'scan.onnx'), str(tmp_path / 'scan.opt.onnx')
    with torch.no_grad():
        torch.onnx.export(Scan(), acts, path, dynamo=False, opset_version=17)
    options = ort.SessionOptions()
    options.optimized_model_filepath = optimized
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    axes = [onnx.helper.get_attribute_value(a) for n in onnx.load(optimized).graph.node
            if n.op_type == 'Split' and len(n.output) == scan_lowering.CHUNK
            for a in n.attribute if a.name == 'axis']
    # level 1 splits (chunk, batch, G, D/G, N, n) tensors: axis 5 would be the pushed one
    assert axes.count(0) >= 4 and 5 not in axes, axes


@pytest.mark.parametrize('kind', ['row', 'cross', 'bidirectional', 'atrous', 'multiscale_low'])
@pytest.mark.parametrize('size', [(5, 7), (6, 4), (1, 3)])
def test_export_index_maps_and_merge(kind, size, monkeypatch):
    """The maps built from tensor ops (what an exported graph computes) equal the cached
    ones; the export gather and both export merges (inverse-map Gather, and the
    ScatterElements for an index of unknown structure) equal the eager ones."""
    h, w = size
    eager_index = sp._cpu_index(kind, h, w)
    x = torch.randn(2, 3, h, w)
    ys = torch.randn(2, eager_index.shape[0], 3, eager_index.shape[1])
    eager_gather = sp.scan_gather(x, eager_index)
    eager_merge = sp.scan_merge(ys, eager_index, (h, w))
    monkeypatch.setattr(torch.onnx, 'is_in_onnx_export', lambda: True)
    index = sp._index(kind, h, w, 'cpu')
    assert torch.equal(index, eager_index)
    assert index.export_segments == (3 if kind == 'multiscale_low' else 1)
    assert torch.equal(sp.scan_gather(x, index), eager_gather)
    assert torch.allclose(sp.scan_merge(ys, index, (h, w)), eager_merge, atol=1e-6)
    plain = index.clone()  # no structure known: the ScatterElements merge
    assert not hasattr(plain, 'export_segments')
    assert torch.allclose(sp.scan_merge(ys, plain, (h, w)), eager_merge, atol=1e-6)


def test_export_merge_accumulates_repeated_pixels(monkeypatch):
    index = torch.tensor([[0, 1, 1, -1, 3], [3, 2, 0, 0, 1]])  # repeats within routes
    ys = torch.randn(2, 2, 3, 5)
    eager = sp.scan_merge(ys, index, (2, 2))
    monkeypatch.setattr(torch.onnx, 'is_in_onnx_export', lambda: True)
    assert torch.allclose(sp.scan_merge(ys, index, (2, 2)), eager, atol=1e-6)


# ------------------------------------------------------------------ backbones in ORT
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_backbone_exports_dynamic(name, tmp_path):
    torch.manual_seed(0)
    model = BACKBONES[name]().eval()
    path = str(tmp_path / f'{name}.onnx')
    info = export_onnx(model, torch.randn(1, 3, 64, 64), path, dynamic=True)
    assert info['part'] == 'forward' and info['dynamic']
    # Larger and smaller than the example (a size baked into the graph shows up in one
    # of them), batch 2, odd stage maps (atrous/patch-merging/wavelet padding).
    if name.startswith('vim'):
        sizes = [(1, 3, 64, 64), (2, 3, 96, 48), (1, 3, 48, 80)]  # grids 6x3, 3x5
    else:
        sizes = [(1, 3, 64, 64), (2, 3, 88, 56), (1, 3, 40, 72)]  # stage 2: 11x7, 5x9
    batches = [torch.randn(*s) for s in sizes]
    rows = verify_onnx(model, path, batches)
    assert len(rows) == 3 * len(info['output_names'])
    for row in rows:
        assert row['ok'], row
    # the same file in OpenVINO (where it installs), every family
    try:
        import openvino  # noqa: F401
    except ImportError:
        return
    rows = verify_onnx(model, path, batches, runtime='openvino')
    assert len(rows) == 3 * len(info['output_names'])
    assert all(r['ok'] and r['runtime'] == 'openvino' for r in rows), rows


def test_static_export_checks_the_input_shape(tmp_path):
    model = BACKBONES['vmamba_v2']().eval()
    path = str(tmp_path / 'static.onnx')
    export_onnx(model, torch.randn(1, 3, 32, 32), path)
    session = RuntimeSession(path)
    assert len(session(torch.randn(1, 3, 32, 32))) == 4
    with pytest.raises(ValueError, match=r'export with --dynamic'):
        session(torch.randn(1, 3, 64, 64))


# ------------------------------------------------------------------ symbolics, outputs
class _Pyramid(nn.Module):
    def forward(self, x):
        pooled = [F.adaptive_avg_pool2d(x, s) for s in (1, 2, 3, 6)]
        return pooled, F.interpolate(pooled[2], size=x.shape[2:], mode='bilinear',
                                     align_corners=False)


def test_adaptive_pool_is_exact_at_any_size(tmp_path):
    path = str(tmp_path / 'ppm.onnx')
    info = export_onnx(_Pyramid(), torch.randn(1, 2, 12, 12), path, dynamic=True)
    assert info['structure'] == [[0, 1, 2, 3], 4]
    rows = verify_onnx(_Pyramid(), path, [torch.randn(2, 2, 7, 9), torch.randn(1, 2, 33, 20)])
    assert all(r['max_rel'] < 1e-5 for r in rows), rows
    # the symbolic is removed after the export: torch's own is back
    from torch.onnx._internal.torchscript_exporter import registration
    group = registration.registry.get_function_group('aten::adaptive_avg_pool2d')
    assert not group._functions.overridden(17)


class _Einsum(nn.Module):
    """``einsum(equation, x[0, 0] or x, weight)`` on the exported 4-D input."""

    def __init__(self, equation, weight_shape):
        super().__init__()
        self.equation = equation
        self.weight = nn.Parameter(torch.randn(weight_shape))
        self.first_rank = len(equation.split(',')[0])

    def forward(self, x):
        a = x if self.first_rank == 4 else x[0, 0] if self.first_rank == 2 else x[0]
        return torch.einsum(self.equation, a, self.weight)


@pytest.mark.parametrize('equation,weight,matmul', [
    ('bkel,kce->bkcl', (3, 4, 5), True),  # SS2D / Vim projections
    ('kel,kce->kcl', (3, 4, 5), True),
    ('ij,kj->ik', (4, 6), True),  # right operand transposed
    ('ji,jk->ik', (5, 4), True),  # left operand transposed
    ('ij,ik->jk', (5, 4), True),
    ('ij,ij->i', (5, 6), False),  # not one matrix product: stays Einsum
])
def test_einsum_export(equation, weight, matmul, tmp_path):
    import onnx
    from mmssm.deployment.symbolics import matmul_plan
    assert (matmul_plan(equation) is not None) == matmul
    model = _Einsum(equation, weight)
    path = str(tmp_path / 'einsum.onnx')
    export_onnx(model, torch.randn(2, 3, 5, 6), path, dynamic=True)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ('Einsum' not in ops and 'MatMul' in ops) if matmul else 'Einsum' in ops
    sizes = [(2, 3, 5, 6), (1, 3, 5, 9)] if equation.endswith('l') else [(2, 3, 5, 6)]
    rows = verify_onnx(model, path, [torch.randn(*s) for s in sizes])
    assert all(r['max_rel'] < 1e-5 for r in rows), rows


def test_matmul_plan_rejects():
    from mmssm.deployment.symbolics import matmul_plan
    for equation in ['ii,ij->ij', 'ij,jk', '...ij,jk->...ik', 'ijk,jkl->il', 'ij,jk,kl->il',
                     'bij,jk->ibk', 'ij,jk->ij']:
        assert matmul_plan(equation) is None, equation


def test_flatten_roundtrip_and_names():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1, ), 2.0)
    flat, structure = flatten_outputs(([a, b], (c, )))
    assert [t.item() for t in flat] == [0, 1, 2] and structure == [[0, 1], [2]]
    assert output_names(structure) == ['output_0_0', 'output_0_1', 'output_1_0']
    assert output_names(0) == ['output']
    rebuilt = unflatten_outputs(flat, structure)
    assert rebuilt[0][1] is b and rebuilt[1][0] is c
    with pytest.raises(ExportError, match=r'returns dict at output\[1\]'):
        flatten_outputs([a, {'x': b}])


def test_metadata_is_written(tmp_path):
    path = str(tmp_path / 'meta.onnx')
    export_onnx(_Pyramid(), torch.randn(1, 2, 12, 12), path, metadata=dict(config='x.py'))
    meta = read_metadata(path)
    assert meta['part'] == 'forward' and meta['config'] == 'x.py'
    assert meta['output_names'] == ['output_0_0', 'output_0_1', 'output_0_2', 'output_0_3',
                                    'output_1']


# ------------------------------------------------------------------ clear errors
class _Unexportable(nn.Module):
    def forward(self, x):
        return torch.linalg.eigvals(x[:, 0, :2, :2]).real


class _Parent(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 1, 1)
        self.odd = _Unexportable()

    def forward(self, x):
        return self.odd(self.stem(x))


def test_unexportable_part_is_named(tmp_path):
    with pytest.raises(ExportError) as info:
        export_onnx(_Parent(), torch.randn(1, 3, 4, 4), str(tmp_path / 'x.onnx'))
    message = str(info.value)
    assert 'odd (_Unexportable)' in message and 'linalg_eigvals' in message
    assert len(message) < 800


def test_bad_arguments(tmp_path):
    model = _Pyramid()
    with pytest.raises(ValueError, match='opset 13'):
        export_onnx(model, torch.randn(1, 2, 8, 8), str(tmp_path / 'x.onnx'), opset=13)
    with pytest.raises(ValueError, match='float32'):
        export_onnx(model, torch.randn(1, 2, 8, 8).double(), str(tmp_path / 'x.onnx'))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        export_onnx(model, torch.randn(2, 8, 8), str(tmp_path / 'x.onnx'))
    with pytest.raises(ExportError, match='does not run on the example input'):
        export_onnx(nn.Conv2d(4, 1, 1), torch.randn(1, 3, 8, 8), str(tmp_path / 'x.onnx'))
    with pytest.raises(FileNotFoundError):
        RuntimeSession(str(tmp_path / 'missing.onnx'))
    assert not osp.exists(str(tmp_path / 'x.onnx'))


def test_compare_outputs_flags_shape_and_nan():
    from mmssm.deployment import compare_outputs
    ref = [torch.ones(2, 3), torch.ones(2)]
    rows = compare_outputs(ref, [np.ones((2, 4)), np.array([1.0, np.nan])])
    assert rows[0]['max_rel'] == float('inf') and 'shape' in rows[0]['note']
    assert rows[1]['max_rel'] == float('inf')
