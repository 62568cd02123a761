"""benchmark_deploy.py runs end to end on a tiny VMamba (export, ONNX Runtime next to
PyTorch, the scan alone) and its rows are consistent: ratio = runtime / torch, errors
within the deployment tolerance, every row named by model, size and part."""
import json
import os.path as osp
import sys

import pytest
import torch

pytest.importorskip('onnxruntime')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))

import benchmark_deploy as tool  # noqa: E402


def test_benchmark_deploy_tiny(tmp_path, monkeypatch):
    from mmssm.models.backbones.vmamba import VMamba
    built = []

    def tiny(family, preset, size):
        built.append((family, preset, size))
        return VMamba(arch=dict(depths=(1, 1, 1, 1), dims=8, d_state=1, ssm_ratio=1.0,
                                mlp_ratio=2.0, gated=False, conv_bias=False,
                                patch_embed='v2', downsample='v3'))

    monkeypatch.setattr(tool, 'build_model', tiny)
    out = tmp_path / 'rows.json'
    threads = torch.get_num_threads()
    try:
        code = tool.main(['--models', 'vmamba', '--sizes', '64', '--threads', '1', '--scan',
                          '--custom-op', '--check', '--warmup', '0', '--repeat', '3',
                          '--json', str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    assert [b[0] for b in built] == ['vmamba'] and tuple(built[0][2]) == (64, 64)
    rows = {(r['part'], r['runtime']): r for r in json.loads(out.read_text())}
    # the standard file, the custom-op file (mmssm.SelectiveScan nodes), the scan alone
    assert set(rows) == {('model', 'onnxruntime'), ('model', 'onnxruntime+op'),
                         ('scan', 'onnxruntime')}
    for row in rows.values():
        assert row['error'] is None and row['size'] == '64x64'
        assert row['torch_ms'] > 0 < row['runtime_ms']
        assert row['ratio'] == pytest.approx(row['runtime_ms'] / row['torch_ms'], rel=1e-6)
        assert row['max_rel'] < 1e-4
