"""mmssm's ONNX Runtime custom operator (csrc/onnxruntime, ``mmssm._ort_ops``): files
exported with ``scan_op='custom'`` hold one ``mmssm.SelectiveScan`` node per scan, ONNX
Runtime runs them with the C++ kernel and gives PyTorch's numbers; bad inputs, other
runtimes and a missing library are refused with messages that say what is wrong."""
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

from mmssm.deployment import (RuntimeSession, custom_op_library, export_onnx,  # noqa: E402
                              verify_onnx)
from mmssm.deployment import runtime as runtime_module  # noqa: E402
from mmssm.models.backbones.vim import Vim  # noqa: E402
from mmssm.models.backbones.vmamba import VMamba  # noqa: E402
from mmssm.ops import selective_scan  # noqa: E402
from mmssm.ops.reference import selective_scan_reference  # noqa: E402

pytestmark = pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')


def _ops(path):
    return [(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node]


def _session(path, threads=1):
    options = ort.SessionOptions()
    options.register_custom_ops_library(custom_op_library())
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


class _Scan(nn.Module):
    """One selective_scan call; weights as buffers, activations as inputs."""

    def __init__(self, A, D, delta_bias, softplus):
        super().__init__()
        self.register_buffer('A', A)
        self.register_buffer('D', D)
        self.register_buffer('delta_bias', delta_bias)
        self.softplus = softplus

    def forward(self, u, delta, B, C, z=None):
        return selective_scan(u, delta, self.A, B, C, self.D, z, self.delta_bias,
                              self.softplus)


def _scan_case(batch, dim, dstate, groups, length, gate, seed=0):
    g = torch.Generator().manual_seed(seed)
    acts = [torch.randn(batch, dim, length, generator=g),
            torch.randn(batch, dim, length, generator=g) * 0.5,
            torch.randn(batch, groups, dstate, length, generator=g),
            torch.randn(batch, groups, dstate, length, generator=g)]
    if gate:
        acts.append(torch.randn(batch, dim, length, generator=g))
    weights = (-torch.rand(dim, dstate, generator=g) * 4 - 0.1, torch.randn(dim, generator=g),
               torch.randn(dim, generator=g) * 0.5)
    return acts, weights


def _export_scan(module, acts, path):
    names = ['u', 'delta', 'B', 'C', 'z'][:len(acts)]
    from mmssm.ops.scan_lowering import export_scan_as
    with export_scan_as('custom'), torch.no_grad():
        torch.onnx.export(module, tuple(acts), str(path), dynamo=False, opset_version=17,
                          input_names=names, output_names=['out'],
                          custom_opsets={'mmssm': 1},
                          dynamic_axes={n: {0: 'b', a.dim() - 1: 'l'}
                                        for n, a in zip(names, acts)})
    return names


def test_library_is_built_and_exports_only_its_entry_point():
    import ctypes
    path = custom_op_library()
    assert path.endswith('.so') and '_ort_ops' in path
    lib = ctypes.CDLL(path)
    assert hasattr(lib, 'RegisterCustomOps')
    # the kernels inside stay hidden (-fvisibility=hidden): they never bind to mmssm._C's
    assert not hasattr(lib, '_ZN5mmssm22selective_scan_fwd_cpuERKNS_22SelectiveScanFwdParamsE')
    # loadable by ONNX Runtime without torch or Python symbols: registering it works
    ort.SessionOptions().register_custom_ops_library(path)


@pytest.mark.parametrize('dstate,groups,gate,softplus,with_weights', [
    (1, 4, False, True, True),    # VMamba v2: N = 1, 4 routes
    (16, 1, True, True, True),    # Vim / VMamba v0: N = 16, gated
    (5, 2, True, False, False),   # odd N, no D / delta_bias (exported as zeros)
])
def test_scan_node_matches_the_reference(dstate, groups, gate, softplus, with_weights,
                                         tmp_path):
    acts, (A, D, bias) = _scan_case(2, 24, dstate, groups, 77, gate)
    module = _Scan(A, D if with_weights else None, bias if with_weights else None, softplus)
    path = tmp_path / 'scan.onnx'
    names = _export_scan(module, acts, path)
    assert sum(op == ('mmssm', 'SelectiveScan') for op in _ops(path)) == 1
    session = _session(path)
    # the example's size and another batch / length from the same file
    for batch, length in ((2, 77), (1, 130)):
        acts_i, _ = _scan_case(batch, 24, dstate, groups, length, gate, seed=batch + length)
        out = session.run(None, {n: a.numpy() for n, a in zip(names, acts_i)})[0]
        ref = selective_scan_reference(acts_i[0], acts_i[1], A, acts_i[2], acts_i[3],
                                       D if with_weights else None,
                                       acts_i[4] if gate else None,
                                       bias if with_weights else None, softplus)
        rel = float(np.abs(out - ref.double().numpy()).max() / ref.abs().max())
        assert out.shape == (batch, 24, length) and rel < 1e-5


def test_threads_give_identical_results(tmp_path):
    acts, (A, D, bias) = _scan_case(2, 64, 16, 2, 300, True)
    path = tmp_path / 'scan.onnx'
    names = _export_scan(_Scan(A, D, bias, True), acts, path)
    feed = {n: a.numpy() for n, a in zip(names, acts)}
    one = _session(path, threads=1).run(None, feed)[0]
    two = _session(path, threads=2).run(None, feed)[0]
    assert np.array_equal(one, two)


def test_bad_input_is_named(tmp_path):
    acts, (A, D, bias) = _scan_case(1, 8, 4, 2, 20, False)
    path = tmp_path / 'scan.onnx'
    names = _export_scan(_Scan(A, D, bias, True), acts, path)
    feed = {n: a.numpy() for n, a in zip(names, acts)}
    feed['B'] = np.zeros((1, 2, 4, 19), np.float32)  # L disagrees with u's
    with pytest.raises(Exception, match=r'mmssm\.SelectiveScan: input B has shape '
                       r'\(1, 2, 4, 19\), expected \(1, 2, 4, 20\)'):
        _session(path).run(None, feed)
    feed['B'] = acts[2].numpy()
    feed['C'] = np.zeros((1, 2, 4, 21), np.float32)
    with pytest.raises(Exception, match=r'input C has shape \(1, 2, 4, 21\), expected '
                       r'\(1, 2, 4, 20\) \(batch, G, N, L\) like B'):
        _session(path).run(None, feed)
    # (a G that does not divide dim, or a mismatched batch, ONNX Runtime itself refuses
    # from the file's static axes)


def _tiny_vmamba():
    return VMamba(arch=dict(depths=(1, 1, 1, 1), dims=8, d_state=1, ssm_ratio=1.0,
                            mlp_ratio=2.0, gated=False, conv_bias=False, patch_embed='v2',
                            downsample='v3'))


@pytest.mark.parametrize('build', [
    _tiny_vmamba,
    lambda: Vim(arch=dict(embed_dims=16, depth=2), img_size=64, out_indices=(0, 1),
                with_cls_token=False),
])
def test_model_with_custom_op_matches_pytorch(build, tmp_path):
    torch.manual_seed(0)
    model = build().eval()
    path = str(tmp_path / 'model.onnx')
    info = export_onnx(model, torch.randn(1, 3, 64, 64), path, dynamic=True,
                       scan_op='custom')
    assert info['scan_op'] == 'custom'
    scans = sum(op == ('mmssm', 'SelectiveScan') for op in _ops(path))
    assert scans >= 2
    session = RuntimeSession(path)
    assert session.custom_op
    rows = verify_onnx(model, path, [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 96, 80)],
                       session=session, tolerance=1e-5)
    assert rows and all(r['ok'] for r in rows), rows
    # the standard file of the same model has no custom node and needs no library
    std = str(tmp_path / 'standard.onnx')
    assert export_onnx(model, torch.randn(1, 3, 64, 64), std)['scan_op'] == 'standard'
    assert not any(domain == 'mmssm' for domain, _ in _ops(std))
    assert not RuntimeSession(std).custom_op


def test_other_runtimes_and_missing_library_are_refused(tmp_path, monkeypatch):
    path = str(tmp_path / 'model.onnx')
    export_onnx(_tiny_vmamba().eval(), torch.randn(1, 3, 32, 32), path, scan_op='custom')
    with pytest.raises(RuntimeError, match=r'openvino cannot run; export it again without '
                       r'--scan-op custom'):
        RuntimeSession(path, 'openvino')
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'mmssm._ort_ops' else real(name, *a))
    with pytest.raises(RuntimeError, match=r'operator library \(mmssm\._ort_ops\) is not '
                       r'built here; build it with'):
        RuntimeSession(path)
    assert runtime_module.file_uses_custom_op(path)


def test_export_rejects_an_unknown_form(tmp_path):
    with pytest.raises(ValueError, match=r"scan_op must be one of \('standard', 'custom'\)"):
        export_onnx(_tiny_vmamba(), torch.randn(1, 3, 32, 32), str(tmp_path / 'x.onnx'),
                    scan_op='fast')


def test_sessions_can_keep_their_threads_from_spinning(tmp_path):
    path = str(tmp_path / 'model.onnx')
    export_onnx(_tiny_vmamba().eval(), torch.randn(1, 3, 32, 32), path)
    key = 'session.intra_op.allow_spinning'
    quiet = RuntimeSession(path, threads=2, spinning=False)
    assert quiet._session.get_session_options().get_session_config_entry(key) == '0'
    default = RuntimeSession(path, threads=2)
    with pytest.raises(RuntimeError, match='does not have configuration'):
        default._session.get_session_options().get_session_config_entry(key)
    assert len(quiet(torch.randn(1, 3, 32, 32))) == 4


def test_hand_built_node_without_attribute_defaults_to_no_softplus(tmp_path):
    """The node contract on its own (not through the exporter): 7 inputs, no gate, no
    ``delta_softplus`` attribute (read as 0)."""
    from onnx import TensorProto, helper
    acts, (A, D, bias) = _scan_case(2, 12, 3, 3, 33, False, seed=5)
    u, delta, B, C = acts
    delta = delta.abs() * 0.2  # no softplus: keep dt >= 0, a decaying recurrence
    dims = {'u': u.shape, 'delta': delta.shape, 'A': A.shape, 'B': B.shape, 'C': C.shape,
            'D': D.shape, 'delta_bias': bias.shape}
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
              for n, s in dims.items()]
    node = helper.make_node('SelectiveScan', list(dims), ['out'], domain='mmssm')
    graph = helper.make_graph([node], 'scan', inputs,
                              [helper.make_tensor_value_info('out', TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17),
                                                    helper.make_opsetid('mmssm', 1)],
                              ir_version=8)
    path = tmp_path / 'node.onnx'
    onnx.save(model, str(path))
    feed = dict(zip(dims, (t.numpy() for t in (u, delta, A, B, C, D, bias.abs()))))
    out = _session(path).run(None, feed)[0]
    ref = selective_scan_reference(u, delta, A, B, C, D, None, bias.abs(), False)
    assert float(np.abs(out - ref.double().numpy()).max() / ref.abs().max()) < 1e-5
