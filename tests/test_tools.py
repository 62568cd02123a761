"""The analysis tools and the tools' error paths.

* get_flops: the selective scan is counted by the FlopAnalyzer handle exactly as
  9*B*L*D*N (+B*D*L for D, +B*D*L for z), once per call and on every backend (the
  'torch' reference loop is not counted element-wise on top); FLOPs with and without the
  handle differ by exactly the formula summed over the scans a forward really runs; the
  CLI works for a bare backbone and for a detector config.
* benchmark.py / erf.py run on tiny models and write their outputs; the ERF of a
  known conv net is exactly its receptive field.
* make_demo_data.py is deterministic and self-consistent; train.py / test.py fail early
  with a message naming the missing path.
"""
import importlib.util
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import mmssm  # noqa: F401
from mmssm.apis import analysis
from mmssm.apis.analysis import (count_flops, effective_receptive_field,
                                 high_contribution_area, log_scaled, selective_scan_flops)
from mmssm.ops import selective_scan
from mmssm.ops.kernels import backend_available

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_MSV = "{'dims': 16, 'depths': (1, 1, 1, 1)}"
BACKENDS = ['torch'] + (['cpu'] if backend_available('cpu') else [])


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is as fast, and immune to OpenMP waits on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_tool(relpath: str):
    """Import a script of tools/ as a module (they are not a package)."""
    path = osp.join(ROOT, relpath)
    name = 'mmssm_tool_' + relpath.replace('/', '_').replace('.py', '')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ScanOnly(nn.Module):
    """One selective scan of fixed inputs and nothing else."""

    def __init__(self, batch=2, dim=6, length=11, d_state=3, groups=2, with_d=True,
                 with_z=False):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.A = nn.Parameter(-torch.rand(dim, d_state, generator=g) - 0.5)
        self.D = nn.Parameter(torch.randn(dim, generator=g)) if with_d else None
        self.delta = torch.rand(batch, dim, length, generator=g)
        self.B = torch.randn(batch, groups, d_state, length, generator=g)
        self.C = torch.randn(batch, groups, d_state, length, generator=g)
        self.z = torch.randn(batch, dim, length, generator=g) if with_z else None

    def forward(self, u):
        return selective_scan(u, self.delta, self.A, self.B, self.C, self.D, self.z,
                              delta_softplus=True)


def test_scan_formula_numbers():
    assert selective_scan_flops(2, 6, 11, 3, with_d=False) == 9 * 2 * 11 * 6 * 3
    assert selective_scan_flops(2, 6, 11, 3) == 9 * 2 * 11 * 6 * 3 + 2 * 6 * 11
    assert selective_scan_flops(2, 6, 11, 3, with_d=True, with_z=True) == \
        9 * 2 * 11 * 6 * 3 + 2 * 2 * 6 * 11


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('with_d,with_z', [(False, False), (True, False), (True, True),
                                           (False, True)])
def test_scan_is_counted_exactly_once(backend, with_d, with_z):
    """A module that only scans costs exactly the formula: the handle sees the right
    shapes and optional operands, and on the 'torch' backend nothing of the reference
    loop is counted in addition."""
    model = ScanOnly(with_d=with_d, with_z=with_z)
    u = torch.randn(2, 6, 11)
    result = count_flops(model, u, backend=backend)
    expected = selective_scan_flops(2, 6, 11, 3, with_d, with_z)
    assert result['backend'] == backend
    assert result['scan_calls'] == 1
    assert result['flops'] == result['scan_flops'] == expected
    # without the handle the scan is invisible to fvcore, as upstream
    assert count_flops(model, u, count_scan=False, backend=backend)['flops'] == 0


def eager_scan_flops(model, inputs):
    """(calls, formula FLOPs) of the scans an eager forward really runs, from the
    arguments each call of ``selective_scan`` / ``selective_scan_lowrank`` /
    ``selective_scan_routes`` receives (independent of the JIT trace; a call that falls
    back to another of them counts once)."""
    seen = {'calls': 0, 'flops': 0, 'depth': 0}
    patched = []

    def arg(args, kwargs, index, name):
        return args[index] if len(args) > index else kwargs.get(name)

    def plain(a_index):  # selective_scan(u, delta, A, ...) / _lowrank(u, low, w, A, ...)
        def sizes(args, kwargs):
            u, A = args[0], args[a_index]
            return (*u.shape, A.shape[1], arg(args, kwargs, a_index + 3, 'D') is not None,
                    arg(args, kwargs, a_index + 4, 'z') is not None)
        return sizes

    def routed(args, kwargs):  # selective_scan_routes(x, index, low, w, A, B, C, D, ...)
        x, index, A = args[0], args[1], args[4]
        return (x.shape[0], index.shape[0] * x.shape[2], index.shape[1], A.shape[1],
                arg(args, kwargs, 7, 'D') is not None, False)

    def recorder(real, sizes):
        def recording(*args, **kwargs):
            if seen['depth'] == 0:
                seen['calls'] += 1
                seen['flops'] += selective_scan_flops(*sizes(args, kwargs))
            seen['depth'] += 1
            try:
                return real(*args, **kwargs)
            finally:
                seen['depth'] -= 1
        return recording

    for module_name, name, sizes in (
            ('mmssm.ops.selective_scan', 'selective_scan', plain(2)),
            ('mmssm.ops.selective_scan', 'selective_scan_lowrank', plain(3)),
            ('mmssm.ops.routed_scan', 'selective_scan_routes', routed)):
        real = getattr(sys.modules[module_name], name)
        recording = recorder(real, sizes)
        for module in [m for key, m in list(sys.modules.items())
                       if key.startswith('mmssm') and getattr(m, name, None) is real]:
            setattr(module, name, recording)
            patched.append((module, name, real))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for module, name, real in patched:
            setattr(module, name, real)
    return seen['calls'], seen['flops']


@pytest.mark.parametrize('name,arch,kwargs,shape', [
    ('msvmamba', dict(dims=16, depths=(1, 1, 1, 1)), {}, (40, 56)),  # D, no z, 2 routes
    ('vim', dict(embed_dims=32, depth=2, patch_size=16, stride=16), dict(img_size=64),
     (64, 64)),  # D and z
])
def test_flops_with_and_without_handle_differ_by_the_formula(name, arch, kwargs, shape):
    model = analysis.build_backbone(name, arch, **kwargs).eval()
    x = torch.randn(1, 3, *shape)
    calls, expected = eager_scan_flops(model, x)
    assert calls > 0
    for backend in BACKENDS:
        with_scan = count_flops(model, x, backend=backend)
        without = count_flops(model, x, count_scan=False, backend=backend)
        assert with_scan['scan_calls'] == calls
        assert with_scan['flops'] - without['flops'] == expected
        assert with_scan['scan_flops'] == expected


def test_get_flops_cli_backbone(capsys):
    tool = load_tool('tools/analysis_tools/get_flops.py')
    result, params = tool.main(['--backbone', 'mmssm.MSVMamba', '--arch', TINY_MSV,
                                '--shape', '32', '48'])
    out = capsys.readouterr().out
    assert 'Input shape: (1, 3, 32, 48)' in out
    assert 'selective scan:' in out and '9*B*L*D*N' in out
    assert f'({result["flops"]:,})' in out and f'({params:,})' in out
    model = analysis.build_backbone('msvmamba', dict(dims=16, depths=(1, 1, 1, 1)))
    assert params == sum(p.numel() for p in model.parameters())
    assert result['scan_flops'] > 0
    plain, _ = tool.main(['--backbone', 'msvmamba', '--arch', TINY_MSV, '--shape', '32',
                          '48', '--no-scan-count'])
    assert result['flops'] - plain['flops'] == result['scan_flops']
    assert '9*B*L*D*N' in tool.DESCRIPTION  # the rule is stated in --help


def test_get_flops_cli_rejects_bad_arguments():
    tool = load_tool('tools/analysis_tools/get_flops.py')
    with pytest.raises(SystemExit):
        tool.main([])  # neither a config nor --backbone
    with pytest.raises(KeyError, match='unknown backbone'):
        tool.main(['--backbone', 'NoSuchMamba'])
    with pytest.raises(ValueError, match='--shape'):
        analysis.parse_shape([1, 2, 3], (224, 224))


def test_get_flops_cli_detector_config(capsys):
    pytest.importorskip('mmdet')
    tool = load_tool('tools/analysis_tools/get_flops.py')
    result, params = tool.main([osp.join(ROOT, 'configs/demo/mask_rcnn_msvmamba_demo.py'),
                                '--shape', '96', '128'])
    out = capsys.readouterr().out
    assert 'MaskRCNN' in out and 'backbone:' in out
    assert result['scan_calls'] == 10  # 5 blocks x (full-res + low-res scan)
    # backbone FLOPs inside the detector = the bare backbone's at the same input
    bare = analysis.build_backbone('msvmamba', dict(dims=32, depths=(1, 1, 2, 1))).eval()
    bare_flops = count_flops(bare, torch.randn(1, 3, 96, 128))['flops']
    assert result['analyzer'].total('backbone') == bare_flops
    assert result['flops'] > bare_flops


def test_benchmark_backbone_writes_json(tmp_path, capsys):
    tool = load_tool('tools/analysis_tools/benchmark.py')
    out = tmp_path / 'bench' / 'result.json'
    tool.main(['--backbone', 'msvmamba', '--arch', TINY_MSV, '--shape', '32', '--batch', '2',
               '--num-warmup', '1', '--num-iters', '2', '--device', 'cpu', '--out', str(out)])
    text = capsys.readouterr().out
    assert 'Throughput:' in text and 'images/s' in text
    result = json.loads(out.read_text())
    assert result['input_shape'] == [2, 3, 32, 32]
    assert result['num_iters'] == 2 and result['fps'] > 0
    assert result['latency_ms_mean'] > 0


def test_benchmark_segmentor_config(tmp_path):
    pytest.importorskip('mmseg')
    tool = load_tool('tools/analysis_tools/benchmark.py')
    result = tool.main([osp.join(ROOT, 'configs/demo/fpn_msvmamba_demo.py'), '--shape', '64',
                        '--num-warmup', '0', '--num-iters', '1', '--device', 'cpu'])
    assert result['mode'] == 'predict' and result['fps'] > 0


def test_erf_tool_writes_png(tmp_path, capsys):
    tool = load_tool('tools/analysis_tools/erf.py')
    out = tmp_path / 'erf' / 'map.png'
    erf, summary = tool.main(['--backbone', 'msvmamba', '--arch', TINY_MSV, '--shape', '32',
                              '--num-images', '2', '--stage', '1', '--out', str(out),
                              '--save-npy'])
    assert out.is_file() and out.stat().st_size > 1000
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    raw = np.load(tmp_path / 'erf' / 'map.npy')
    assert raw.shape == (32, 32) and np.isfinite(raw).all() and raw.sum() > 0
    np.testing.assert_allclose(raw, erf)
    assert summary['stage'] == 1
    assert 'area ratio @ 20% contribution' in capsys.readouterr().out


def test_erf_of_a_conv_is_its_receptive_field():
    """Central pixel of a 5x5 conv over a 3x3 conv: the ERF is exactly the 7x7 window
    around the centre, peaked in the middle."""

    class TwoConvs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.b = nn.Conv2d(4, 2, 5, padding=2, bias=False)
            for conv in (self.a, self.b):
                nn.init.constant_(conv.weight, 0.1)

        def forward(self, x):
            return [self.b(self.a(x))]

    images = torch.rand(3, 3, 21, 21) + 0.1  # positive: the centre's ReLU is active
    erf = effective_receptive_field(TwoConvs(), images)
    support = np.argwhere(erf > 0)
    assert support.min(0).tolist() == [7, 7] and support.max(0).tolist() == [13, 13]
    assert erf[10, 10] == pytest.approx(erf.max())  # box * box: flat top at the centre
    assert erf[7, 7] < erf[8, 8] < erf[10, 10]
    heat = log_scaled(erf)
    assert heat.max() == 1.0 and heat.min() == 0.0
    ratios = high_contribution_area(erf, (0.99, ))
    assert ratios[0.99] <= 49 / 21**2 + 1e-12


def test_make_demo_data_is_deterministic(tmp_path):
    from PIL import Image
    tool = load_tool('tools/make_demo_data.py')
    tool.main(['--out', str(tmp_path / 'a'), '--num-train', '3', '--num-val', '2'])
    tool.main(['--out', str(tmp_path / 'b'), '--num-train', '3', '--num-val', '2'])
    for rel in ('coco/annotations/instances_train.json', 'coco/val/val_0001.png',
                'ade/annotations/training/train_0002.png'):
        assert (tmp_path / 'a' / rel).read_bytes() == (tmp_path / 'b' / rel).read_bytes()
    coco = json.loads((tmp_path / 'a/coco/annotations/instances_train.json').read_text())
    assert [c['name'] for c in coco['categories']] == ['circle', 'square', 'triangle']
    assert len(coco['images']) == 3 and coco['annotations']
    for ann in coco['annotations']:
        image = next(i for i in coco['images'] if i['id'] == ann['image_id'])
        x, y, w, h = ann['bbox']
        assert 0 <= x and x + w <= image['width'] + 1e-6 and w > 0
        assert 0 <= y and y + h <= image['height'] + 1e-6 and h > 0
        # the ADE label map has this shape's class (category + 1) inside its box
        name = osp.splitext(image['file_name'])[0]
        label = np.asarray(Image.open(tmp_path / 'a/ade/annotations/training' /
                                      (name + '.png')))
        window = label[int(y):int(y + h) + 1, int(x):int(x + w) + 1]
        assert (window == ann['category_id'] + 1).any()
    label = np.asarray(Image.open(tmp_path / 'a/ade/annotations/validation/val_0000.png'))
    assert label.shape == (120, 160) and set(np.unique(label)) <= {1, 2, 3, 4}


def test_missing_data_root_is_a_clear_error(tmp_path):
    pytest.importorskip('mmdet')
    train = load_tool('tools/train.py')
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError) as info:
        train.main([osp.join(ROOT, 'configs/demo/retinanet_msvmamba_demo.py'), '--work-dir',
                    str(tmp_path / 'wd'), '--cfg-options',
                    f'train_dataloader.dataset.data_root={missing}'])
    message = str(info.value)
    assert 'train_dataloader.dataset.data_root' in message
    assert repr(missing) in message and 'does not exist' in message
    assert not (tmp_path / 'wd').exists()  # failed before creating anything


def test_truncated_annotation_json_is_named(tmp_path, monkeypatch):
    pytest.importorskip('mmdet')
    load_tool('tools/make_demo_data.py').main(
        ['--out', str(tmp_path / 'data' / 'demo'), '--num-train', '2', '--num-val', '1'])
    ann = tmp_path / 'data/demo/coco/annotations/instances_train.json'
    ann.write_bytes(ann.read_bytes()[:ann.stat().st_size // 2])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        load_tool('tools/train.py').main(
            [osp.join(ROOT, 'configs/demo/retinanet_msvmamba_demo.py'), '--work-dir',
             str(tmp_path / 'wd'), '--cfg-options', 'train_cfg.max_iters=1'])
    message = str(info.value)
    assert 'not valid JSON' in message and 'instances_train.json' in message
    assert 'instances_val.json' not in message  # only the broken file is named


def test_test_tool_missing_checkpoint(tmp_path):
    pytest.importorskip('mmdet')
    test = load_tool('tools/test.py')
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        test.main([osp.join(ROOT, 'configs/demo/retinanet_msvmamba_demo.py'),
                   str(tmp_path / 'none.pth')])


def test_train_tool_missing_config(tmp_path):
    train = load_tool('tools/train.py')
    with pytest.raises(FileNotFoundError, match='config file not found'):
        train.main([str(tmp_path / 'nope.py')])


def test_demo_configs_target_demo_data():
    """Every demo config trains on data/demo with the demo's classes."""
    from mmssm.apis import load_config
    names = sorted(n for n in os.listdir(osp.join(ROOT, 'configs/demo')) if n.endswith('.py'))
    assert {'mask_rcnn_msvmamba_demo.py', 'retinanet_msvmamba_demo.py',
            'upernet_msvmamba_demo.py', 'fpn_msvmamba_demo.py',
            'ssdlite_mobilemamba_demo.py', 'cls_msvmamba_demo.py'} <= set(names)
    for name in names:
        cfg = load_config(osp.join(ROOT, 'configs/demo', name))
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            dataset = cfg[loader].dataset
            assert dataset.data_root.startswith('data/demo/'), (name, loader)
            classes = dataset.metainfo['classes']
            assert len(classes) == (4 if cfg.default_scope == 'mmseg' else 3)
        assert cfg.model.backbone.init_cfg is None  # from scratch: nothing to download
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters <= 500
