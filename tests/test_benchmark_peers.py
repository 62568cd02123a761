"""benchmark_backbone.py --peers: the issue-16 report runs end to end on tiny inputs (an
mmssm model and an mmpretrain peer in one process, no torchvision) and its numbers are
consistent: fraction of the GEMM rate = MACs / time / rate, every ratio target names its
model and peer, and the per-round spread of a target brackets its value from the medians."""
import importlib.util
import json
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_benchmark():
    path = osp.join(ROOT, 'tools/analysis_tools/benchmark_backbone.py')
    spec = importlib.util.spec_from_file_location('mmssm_tool_benchmark_backbone', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peers_report(tmp_path):
    pytest.importorskip('mmpretrain')
    tool = load_benchmark()
    out = tmp_path / 'peers.json'
    threads = torch.get_num_threads()
    try:
        tool.main(['--peers', 'resnet50', 'deit-ti', '--models', 'vim:tiny', '--sizes', '32',
                   '--growth-size', '0', '--thread-size', '0', '--train-batch', '0',
                   '--iters', '3', '--warmup', '0', '--json', str(out),
                   '--heap', 'default',  # (steady: a process-wide mallopt)
                   '--heap-models', 'vim:tiny'])  # (in processes of their own)
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    rows = {r['model']: r for r in report['inference']}
    assert set(rows) == {'vim:tiny', 'resnet50', 'deit-ti'}
    for row in rows.values():
        assert row['size'] == '32x32' and row['ms'] > 0 and row['gmacs'] > 0
        rate = row['gemm_gmac_per_s'] * 1e9
        assert row['gemm_fraction'] == pytest.approx(row['gmacs'] * 1e9 / (row['ms'] / 1e3)
                                                     / rate, rel=1e-6)
    targets = {t['target']: t for t in report['targets']}
    ratio = targets['vim:tiny <= 2x deit-ti at 32']
    assert ratio['value'] == pytest.approx(rows['vim:tiny']['ms'] / rows['deit-ti']['ms'])
    assert ratio['met'] == (ratio['value'] <= 2.0)
    fraction = targets['vim:tiny >= 0.65 of the GEMM rate at 32']
    for target in (ratio, fraction):  # each round's own value; the medians' lies within
        low, high = target['rounds']
        assert 0 < low <= target['value'] * (1 + 1e-9) and target['value'] <= high * (1 + 1e-9)
    (heap, ) = report['heap']
    assert heap['model'] == 'vim:tiny' and heap['size'] == '32x32'
    for policy in ('default', 'steady'):
        assert heap[f'{policy}_ms'] > 0 and heap[f'{policy}_faults'] >= 0


def test_peers_need_the_cpu():
    tool = load_benchmark()
    with pytest.raises(SystemExit):
        tool.parse_args(['--peers', '--device', 'cuda'])


def test_round_spread_brackets_the_ratio_of_medians():
    """The value from the medians lies between the lowest and highest per-round value,
    whatever the rounds (each round's times bound the medians' order statistics)."""
    import random
    import statistics
    tool = load_benchmark()
    rng = random.Random(0)
    for count in (1, 2, 3, 4, 7):
        for _ in range(200):
            model = [rng.uniform(0.5, 2.0) for _ in range(count)]
            peer = [rng.uniform(0.5, 2.0) for _ in range(count)]
            low, high = tool.round_spread([m / p for m, p in zip(model, peer)])
            value = statistics.median(model) / statistics.median(peer)
            assert low <= value * (1 + 1e-12) and value <= high * (1 + 1e-12)
    assert tool.round_spread([1.5, 0.5, 1.0]) == [0.5, 1.5]
