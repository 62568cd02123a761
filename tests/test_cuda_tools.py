"""The CUDA tooling that must work without a GPU.

* ``tools/check_cuda_build.sh`` (slow): mmssm._C_cuda builds against the CUDA build of the
  pinned torch in its cached venv, imports, and says "no CUDA device" when called here.
* ``tools/device_check.sh --dry-run``: every step is listed, and every benchmark command
  it would run is accepted by that script's own argument parser.
* The ``cuda``-marked op and backbone tests collect without mmcv, mmdet, mmseg and
  mmpretrain (the GPU machine has none of them).
* ``tools/device_report.py``: the report and its target checks, from synthetic results.
* ``benchmark_scan.py``: CUDA-event timing (with fake events) and the --json/--markdown
  outputs (on the CPU).
"""
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmssm import families
from mmssm.ops.kernels import backend_available, load_backend

ROOT = Path(__file__).resolve().parents[1]


def load_tool(rel):
    path = ROOT / rel
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(cmd, **kwargs):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kwargs)


# ---------------------------------------------------------------------------------------
# build proof
@pytest.mark.slow
def test_check_cuda_build():
    if shutil.which('nvcc') is None and not os.path.exists('/usr/local/cuda/bin/nvcc') \
            and not os.environ.get('CUDA_HOME'):
        pytest.skip('no nvcc on this machine: mmssm._C_cuda cannot be built here')
    proc = run(['bash', 'tools/check_cuda_build.sh'], timeout=3600)
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, f'check_cuda_build.sh failed:\n{out[-4000:]}'
    assert 'import mmssm._C_cuda: ok' in out
    assert '+cu' in out  # the CUDA build of torch, not the CPU one
    if 'CUDA device(s) visible' not in out:  # a GPU-less machine, as CI is
        for call in ('fwd', 'bwd', "selective_scan(backend='cuda')"):
            assert f'{call} without a GPU' in out and 'no CUDA device' in out


# ---------------------------------------------------------------------------------------
# the device check, dry
def dry_run_steps(*args):
    proc = run(['bash', 'tools/device_check.sh', '--dry-run', *args], timeout=60)
    assert proc.returncode == 0, proc.stderr
    steps = {}
    for line in proc.stdout.splitlines():
        if line.startswith('step '):
            head, _, command = line.partition('): ')
            steps[head.split()[1]] = command
    return steps


def test_device_check_dry_run_lists_every_step():
    steps = dry_run_steps()
    assert list(steps) == ['env', 'wheels', 'build', 'tests', 'harness', 'scan',
                           'backbone-224-infer',
                           'backbone-800x1333-train', 'backbone-224-train',
                           'backbone-800x1333-infer', 'official']
    assert '-m cuda tests/ops tests/models' in steps['tests']
    assert 'setup.py build_ext --inplace' in steps['build']
    assert 'MAX_JOBS=$(nproc)' in steps['build']
    for dtype in ('float32', 'float16', 'bfloat16'):
        assert dtype in steps['scan']
    only = dry_run_steps('--steps', 'build,scan')
    assert list(only) == ['env', 'build', 'scan']


def _tool_arguments(command, script):
    """The arguments of ``script`` in a step's shell command (up to ; && ||)."""
    words = shlex.split(command.replace('$dt', 'float16'))
    start = next(i for i, w in enumerate(words) if w.endswith(script)) + 1
    end = next((i for i in range(start, len(words))
                if words[i] in (';', '&&', '||') or words[i].endswith(';')), len(words))
    return words[start:end]


def test_device_check_benchmark_commands_parse():
    steps = dry_run_steps()
    scan = load_tool('tools/analysis_tools/benchmark_scan.py')
    args = scan.parse_args(_tool_arguments(steps['scan'], 'benchmark_scan.py'))
    assert args.device == 'cuda' and args.measure_bandwidth and args.json and args.markdown
    backbone = load_tool('tools/analysis_tools/benchmark_backbone.py')
    expected = {'backbone-224-infer': ((224, 224), 128, ['infer']),
                'backbone-224-train': ((224, 224), 64, ['train']),
                'backbone-800x1333-train': ((800, 1333), 2, ['train']),
                'backbone-800x1333-infer': ((800, 1333), 2, ['infer'])}
    for name, (size, batch, modes) in expected.items():
        args = backbone.parse_args(_tool_arguments(steps[name], 'benchmark_backbone.py'))
        assert args.device == 'cuda' and args.sizes == [size] and args.batch == batch
        assert args.modes == modes and sorted(args.precisions) == ['amp', 'fp32']
        assert sorted(args.paths) == ['default', 'torch']
        assert sorted(m.split(':')[0] for m in args.models) == sorted(families.names())
        assert args.torch_warmup == 0 and args.markdown and args.json


def test_device_check_rejects_unknown_arguments():
    proc = run(['bash', 'tools/device_check.sh', '--bogus'], timeout=60)
    assert proc.returncode == 2 and "unknown argument '--bogus'" in proc.stderr


BLOCK_OPENMMLAB = '''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmcv', 'mmdet', 'mmseg', 'mmpretrain'):
            raise ImportError(f'{name} is blocked: the GPU machine has no OpenMMLab stack')
sys.meta_path.insert(0, Block())
import pytest
sys.exit(pytest.main(['--collect-only', '-q', '-m', 'cuda', '-p', 'no:cacheprovider',
                      'tests/ops', 'tests/models']))
'''


def test_cuda_tests_collect_without_openmmlab():
    proc = run([sys.executable, '-c', BLOCK_OPENMMLAB], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = [line for line in proc.stdout.splitlines() if '::' in line]
    assert any('tests/ops/test_selective_scan.py' in c and 'cuda' in c for c in collected)
    assert any('tests/models/test_cuda.py' in c and 'cuda-vs-cpu' in c for c in collected)
    assert any('tests/models/test_amp.py' in c and 'cuda' in c for c in collected)


# ---------------------------------------------------------------------------------------
# the report
def _scan_json(dtype, fwd_x, bwd_x):
    rows = [dict(shape='vmamba_t_s1', dstate=1, backend='cuda', fwd_x_floor=fwd_x,
                 bwd_x_floor=bwd_x),
            dict(shape='vim_ti', dstate=16, backend='cuda', fwd_x_floor=9.0,
                 bwd_x_floor=9.0),
            dict(shape='vmamba_t_s1', dstate=1, backend='torch', fwd_x_floor=None)]
    return dict(title=f'fake {dtype}', results=rows)


def _backbone_json(cells):
    results = []
    for model, path, img_per_s, peak_mb, error in cells:
        results.append(dict(model=model, size='x', batch=1, precision='amp', mode='m',
                            path=path, img_per_s=img_per_s, ms_per_iter=1.0,
                            peak_mb=peak_mb, error=error))
    return dict(environment=['fake'], results=results)


def test_device_report_checks_the_targets(tmp_path):
    report = load_tool('tools/device_report.py')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'steps.tsv').write_text('env\tok\t1\tenv\ntests\tok\t50\tpytest\n'
                                    'scan\tok\t60\tscan\nbackbone-224-infer\tok\t40\tb\n'
                                    'backbone-800x1333-train\ttimed out\t100\tb\n')
    (work / 'env.out').write_text('gpu: NVIDIA H100 80GB HBM3\n')
    (work / 'tests.out').write_text('....\n151 passed in 40.00s\n')
    (work / 'scan_float16.json').write_text(json.dumps(_scan_json('float16', 1.2, 1.4)))
    (work / 'scan_bfloat16.json').write_text(json.dumps(_scan_json('bfloat16', 1.25, 1.7)))
    (work / 'scan.md').write_text('#### selective scan, float16\n\n| table |\n')
    (work / 'backbone-224-infer.json').write_text(json.dumps(_backbone_json([
        ('vmamba:tiny_s1l8', 'default', 600.0, 1000.0, None),
        ('vmamba:tiny_s1l8', 'torch', 100.0, 3000.0, None),
        ('vim:tiny', 'default', 300.0, 1000.0, None),
        ('vim:tiny', 'torch', None, None, 'OOM')])))
    (work / 'backbone-800x1333-train.json').write_text(json.dumps(_backbone_json([
        ('vmamba:tiny_s1l8', 'default', 5.0, 2000.0, None),
        ('vmamba:tiny_s1l8', 'torch', 1.0, 1500.0, None)])))
    (work / 'backbone-800x1333-train.out').write_text('Traceback\nKilled by the cap\n')
    out = tmp_path / 'out'
    report.main(['--work', str(work), '--out', str(out), '--budget', '450', '--total', '251'])

    text = (out / 'device_check.md').read_text()
    data = json.loads((out / 'device_check.json').read_text())
    results = {t['target']: t['result'] for t in data['targets']}
    assert results['CUDA op and backbone tests (vs float64 reference and CPU kernel)'] == 'PASS'
    # bfloat16's backward is 1.7x the floor; N=16 rows do not count
    assert results['scan forward <= 1.3x HBM floor (N=1 shapes)'] == 'PASS'
    assert results['scan backward <= 1.5x HBM floor (N=1 shapes)'] == 'FAIL'
    # 6x for VMamba; Vim's torch path ran out of memory while the default path ran
    assert results['backbone inference img/s at 224 >= 1.2x the torch path'] == 'PASS'
    assert results['backbone training peak memory at 800x1333 below the torch path'] == 'FAIL'
    assert 'NVIDIA H100' in text and '| backbone-800x1333-train | timed out | 100 |' in text
    assert '### backbone-800x1333-train: timed out' in text and 'Killed by the cap' in text
    assert 'not measured (not run)' in text  # backbone-224-train never ran
    assert 'worst 1.70x (vmamba_t_s1)' in text


def test_device_report_all_skipped_is_not_a_pass(tmp_path):
    report = load_tool('tools/device_report.py')
    assert report.tests_result('ok', '157 skipped, 538 deselected in 6.95s') is False
    assert report.tests_result('ok', '150 passed, 7 skipped in 40s') is True
    assert report.tests_result('ok', '2 failed, 148 passed in 40s') is False
    assert report.tests_result(None, '') is None


# ---------------------------------------------------------------------------------------
# benchmark_scan
class _FakeEvent:
    """Stands in for torch.cuda.Event: 'records' a fake clock advanced by each call."""
    clock = 0.0

    def __init__(self, enable_timing=True):
        self.at = None

    def record(self):
        self.at = _FakeEvent.clock

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.at - self.at) * 1e3  # ms


def test_time_call_cuda_sizes_batches_from_a_calibration(monkeypatch):
    scan = load_tool('tools/analysis_tools/benchmark_scan.py')
    monkeypatch.setattr(torch.cuda, 'Event', _FakeEvent)
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: None)
    calls = []

    def fn():  # 2 ms per call
        calls.append(1)
        _FakeEvent.clock += 2e-3

    t = scan.time_call_cuda(fn, 'cuda', warmup=2, min_reps=3, max_reps=1000, budget_s=0.1)
    assert t == pytest.approx(2e-3)
    # 2 warm-up + 3 calibration + 5 batches of 0.1 s / 5 / 2 ms = 10 calls
    assert len(calls) == 2 + 3 + 5 * 10
    calls.clear()
    scan.time_call_cuda(fn, 'cuda', warmup=0, min_reps=1, max_reps=20, budget_s=10.0)
    assert len(calls) == 1 + 5 * 4  # capped by max_reps // batches


def test_benchmark_scan_writes_json_and_markdown(tmp_path, capsys):
    scan = load_tool('tools/analysis_tools/benchmark_scan.py')
    out_json, out_md = tmp_path / 's.json', tmp_path / 's.md'
    scan.main(['--device', 'cpu', '--shapes', 'vmamba_t_s4', '--backends', 'torch',
               '--budget', '0', '--min-reps', '1', '--max-reps', '1', '--json', str(out_json),
               '--markdown', str(out_md)])
    data = json.loads(out_json.read_text())
    (row,) = data['results']
    assert row['shape'] == 'vmamba_t_s4' and row['backend'] == 'torch' and row['fwd_s'] > 0
    assert row['fwd_bwd_s'] > 0 and row['error'] is None
    md = out_md.read_text()
    assert md.startswith('#### selective scan, float32') and '| vmamba_t_s4 | 1 |' in md
    assert 'vmamba_t_s4' in capsys.readouterr().out


def test_benchmark_scan_heap_policy(capsys, monkeypatch):
    """CPU runs keep glibc's heap steady by default (as benchmark_backbone.py does) and
    say so in the title; --heap default leaves the policy alone."""
    scan = load_tool('tools/analysis_tools/benchmark_scan.py')
    taken = []
    monkeypatch.setattr(scan, 'steady_heap', lambda: taken.append(1) or True)
    argv = ['--device', 'cpu', '--shapes', 'vmamba_t_s4', '--backends', 'torch',
            '--budget', '0', '--min-reps', '1', '--max-reps', '1']
    scan.main(argv)
    assert taken == [1] and 'glibc heap kept between calls' in capsys.readouterr().out
    scan.main(argv + ['--heap', 'default'])
    assert taken == [1] and 'glibc heap kept' not in capsys.readouterr().out


def test_interleaved_ratios_alternate_the_order():
    scan = load_tool('tools/analysis_tools/benchmark_scan.py')
    clock, order = [0.0], []

    def fake(name, cost):
        def fn():
            order.append(name)
            clock[0] += cost
        return fn

    ratios = scan.interleaved_ratios(fake('new', 1.0), fake('base', 3.0), rounds=3, calls=2,
                                     clock=lambda: clock[0])
    assert ratios == [3.0, 3.0, 3.0]
    assert order == ['new'] * 2 + ['base'] * 2 + ['base'] * 2 + ['new'] * 2 + \
        ['new'] * 2 + ['base'] * 2


@pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
def test_benchmark_scan_compares_builds_interleaved(capsys, tmp_path):
    """--cpu-baseline given this checkout's own extension: the same kernels, so the
    outputs are bit-identical (what the line reports, also in the markdown and JSON
    outputs); --rounds without a baseline is refused."""
    scan = load_tool('tools/analysis_tools/benchmark_scan.py')
    own = load_backend('cpu').__file__
    md, js = tmp_path / 'scan.md', tmp_path / 'scan.json'
    scan.main(['--device', 'cpu', '--shapes', 'vmamba_t_s4', '--backends', 'cpu',
               '--budget', '0', '--min-reps', '1', '--max-reps', '1', '--warmup', '0',
               '--cpu-baseline', own, '--rounds', '2', '--round-calls', '1',
               '--markdown', str(md), '--json', str(js)])
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if 'interleaved' in x]
    assert 'vmamba_t_s4' in line and '2 rounds of 1 calls' in line
    assert 'fwd ' in line and 'fwd+bwd ' in line and 'outputs bit-identical' in line
    assert f'* {line.lstrip("# ")}' in md.read_text().splitlines()
    assert json.loads(js.read_text())['builds_interleaved'] == [line.lstrip('# ')]
    with pytest.raises(SystemExit, match='--rounds alternates'):
        scan.main(['--device', 'cpu', '--backends', 'cpu', '--rounds', '2'])


def test_benchmarks_refuse_cuda_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip('a GPU is visible')
    for tool in ('benchmark_scan.py', 'benchmark_backbone.py'):
        module = load_tool(f'tools/analysis_tools/{tool}')
        with pytest.raises(SystemExit, match='no CUDA device is available'):
            module.main(['--device', 'cuda'])


# ---------------------------------------------------------------------------------------
# official VMamba side by side (the harness; the official code itself is never in the repo)
FAKE_OFFICIAL_VMAMBA = '''
import torch
import torch.nn as nn


class Backbone_VSSM(nn.Module):
    """Four stride-2 conv stages: stands in for the official class in this test."""

    def __init__(self, dims=16, out_indices=(0, 1, 2, 3), **kwargs):
        super().__init__()
        widths = [3] + [dims * 2**i for i in range(4)]
        self.stages = nn.ModuleList(nn.Conv2d(a, b, 3, 2, 1)
                                    for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs
'''


def _fake_official(tmp_path):
    official = tmp_path / 'VMamba'
    (official / 'kernels' / 'selective_scan').mkdir(parents=True)
    models = official / 'classification' / 'models'
    models.mkdir(parents=True)
    (models / 'vmamba.py').write_text(FAKE_OFFICIAL_VMAMBA)
    return official


def test_official_compare_harness(tmp_path, monkeypatch, capsys):
    import copy

    import mmssm.converters
    compare = load_tool('tools/official_vmamba_compare.py')
    official = _fake_official(tmp_path)
    seen = {}

    def from_official(family, config, state_dict):  # "converts" by copying the model
        vmamba = sys.modules['vmamba']
        model = vmamba.Backbone_VSSM(**config)
        model.load_state_dict(state_dict)
        seen.update(family=family, config=config)
        return copy.deepcopy(model).eval()

    monkeypatch.setattr(mmssm.converters, 'from_official', from_official)
    monkeypatch.syspath_prepend(str(tmp_path))  # restored afterwards, with sys.modules
    md, js = tmp_path / 'official.md', tmp_path / 'official.json'
    try:
        compare.main(['--official', str(official), '--device', 'cpu', '--small', '--batch', '2',
                      '--train-batch', '2', '--warmup', '0', '--iters', '1',
                      '--markdown', str(md), '--json', str(js)])
    finally:
        sys.modules.pop('vmamba', None)
    assert seen['family'] == 'vmamba' and seen['config']['forward_type'] == 'v05_noz'
    data = json.loads(js.read_text())
    assert data['parity_ok'] and data['parity_errors'] == [0.0] * 4
    assert [(r['mode'], r['precision']) for r in data['results']] == [
        ('infer', 'amp'), ('infer', 'fp32'), ('train', 'amp')]
    for r in data['results']:
        assert r['official_img_per_s'] > 0 and r['mmssm_img_per_s'] > 0
    text = md.read_text()
    assert 'Parity' in text and '- ok' in text and '| infer | fp32 | 2 |' in text


def test_official_compare_names_a_bad_copy(tmp_path):
    compare = load_tool('tools/official_vmamba_compare.py')
    with pytest.raises(SystemExit, match='must be a copy of the official VMamba repository'):
        compare.import_official(tmp_path / 'nowhere')
