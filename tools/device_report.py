"""The helpers and the report of ``tools/device_check.sh`` (the one prepared GPU run).

    python tools/device_report.py --environment   # step 'env': what machine this is
    python tools/device_report.py --arch          # this GPU's arch, for TORCH_CUDA_ARCH_LIST
    python tools/device_report.py --check-build   # step 'build': both extensions load
    python tools/device_report.py --work DIR --out DIR [--budget S] [--total S]

The last form reads what the steps left in ``--work`` (``steps.tsv``, ``<step>.out``,
the benchmarks' ``*.json`` / ``*.md``) and writes ``device_check.md`` (the report, with
the issue's targets checked against the figures) and ``device_check.json`` (every figure)
into ``--out``. It needs only the standard library, so it also runs when torch is broken.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]

# Issue 12's targets (docs/benchmarks.md, "GPU: not yet measured").
SCAN_FWD_MAX_X_FLOOR = 1.3
SCAN_BWD_MAX_X_FLOOR = 1.5
INFER_MIN_SPEEDUP = 1.2

BACKBONE_STEPS = [
    ('backbone-224-infer', '224x224, batch 128, inference'),
    ('backbone-800x1333-train', '800x1333, batch 2, training step'),
    ('backbone-224-train', '224x224, batch 64, training step'),
    ('backbone-800x1333-infer', '800x1333, batch 2, inference'),
]
DTYPES = ('float32', 'float16', 'bfloat16')


# ---------------------------------------------------------------------------------------
# helper commands of the steps
# ---------------------------------------------------------------------------------------
def _run(cmd: List[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f'unavailable ({err})'


def commit() -> str:
    """The commit under test: .device/COMMIT (written by --prepare, since the GPU
    machine's copy of the tree has no .git), else git."""
    recorded = ROOT / '.device' / 'COMMIT'
    if recorded.is_file():
        return ' '.join(recorded.read_text().split())
    return _run(['git', '-C', str(ROOT), 'rev-parse', 'HEAD'])


def environment() -> List[str]:
    lines = [f'commit: {commit()}',
             f'date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}',
             f'host: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}',
             f'python: {sys.version.split()[0]} ({sys.executable})',
             'gpu: ' + _run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version,'
                             'clocks.max.sm,clocks.max.mem', '--format=csv,noheader']),
             'nvcc: ' + _run(['nvcc', '--version']).splitlines()[-1]]
    for module in ('torch', 'triton', 'numpy', 'mmengine'):
        try:
            mod = __import__(module)
            text = getattr(mod, '__version__', '?')
            if module == 'torch':
                text += (f', CUDA {mod.version.cuda}, cuDNN {mod.backends.cudnn.version()}, '
                         f'{mod.cuda.device_count()} device(s)')
                if mod.cuda.is_available():
                    p = mod.cuda.get_device_properties(0)
                    text += (f', {p.name}: sm_{p.major}{p.minor}, {p.multi_processor_count} '
                             f'SMs, {p.total_memory / 2**30:.1f} GiB')
        except Exception as err:  # noqa: BLE001 - report, do not stop
            text = f'not importable ({type(err).__name__}: {err})'
        lines.append(f'{module}: {text}')
    return lines


def cuda_arch() -> str:
    import torch
    if not torch.cuda.is_available():
        raise SystemExit('no CUDA device visible (torch.cuda.is_available() is False)')
    return '%d.%d' % torch.cuda.get_device_capability()


def check_build() -> None:
    import torch  # noqa: F401  (loads libc10 & co. the extensions link against)

    import mmssm._C  # noqa: F401
    import mmssm._C_cuda as ext
    from mmssm.ops.kernels import backend_available
    for backend in ('cpu', 'cuda'):
        if not backend_available(backend):
            raise SystemExit(f'the {backend!r} backend is not available after the build')
    print(f'mmssm._C and mmssm._C_cuda load ({Path(ext.__file__).name}); arch {cuda_arch()}')


# ---------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------
def _result(ok: Optional[bool]) -> str:
    return {True: 'PASS', False: 'FAIL', None: 'NOT MEASURED'}[ok]


def scan_targets(scan: Dict[str, dict]) -> List[List[str]]:
    """Rows (target, result, detail) for the scan: every CUDA row with N = 1 (the
    memory-bound VMamba shapes of spec §4.4; N = 16 is also bound by exp throughput) must
    be within the floor factors, in every dtype measured."""
    rows = []
    for key, limit, label in (('fwd_x_floor', SCAN_FWD_MAX_X_FLOOR, 'forward'),
                              ('bwd_x_floor', SCAN_BWD_MAX_X_FLOOR, 'backward')):
        details, oks = [], []
        for dtype in DTYPES:
            records = [r for r in scan.get(dtype, {}).get('results', [])
                       if r.get('backend') == 'cuda' and r.get('dstate') == 1]
            if not records:
                continue
            values = [(r[key], r['shape']) for r in records if r.get(key) is not None]
            failed = [r['shape'] for r in records if r.get(key) is None]
            if values:
                worst, shape = max(values)
                details.append(f'{dtype}: worst {worst:.2f}x ({shape})')
                oks.append(worst <= limit and not failed)
            if failed:
                details.append(f'{dtype}: {", ".join(failed)} not measured (OOM/error)')
                oks.append(False)
        rows.append([f'scan {label} <= {limit}x HBM floor (N=1 shapes)',
                     _result(all(oks) if oks else None), '; '.join(details) or '-'])
    return rows


def tests_result(status: Optional[str], output: str) -> Optional[bool]:
    """PASS needs the step to succeed *and* tests to have run: on a machine where torch
    sees no GPU every cuda-marked test is skipped and pytest still exits 0."""
    if status is None:
        return None
    summary = _tail(output, 1)
    return status == 'ok' and ' passed' in summary and ' failed' not in summary


def _cells(backbone: dict) -> Dict[tuple, Dict[str, dict]]:
    cells: Dict[tuple, Dict[str, dict]] = {}
    for r in backbone.get('results', []):
        cells.setdefault((r['model'], r['precision']), {})[r['path']] = r
    return cells


def backbone_targets(backbones: Dict[str, dict]) -> List[List[str]]:
    rows = []
    # inference img/s at 224: default >= 1.2x torch path
    details, oks = [], []
    for (model, precision), paths in _cells(backbones.get('backbone-224-infer', {})).items():
        d, t = paths.get('default'), paths.get('torch')
        if not d or d.get('error') or not d.get('img_per_s'):
            details.append(f'{model} {precision}: default path {d and d.get("error")}')
            oks.append(False)
        elif not t or t.get('error') or not t.get('img_per_s'):
            details.append(f'{model} {precision}: torch path {t and t.get("error")} '
                           '(default ran)')
            oks.append(True)
        else:
            ratio = d['img_per_s'] / t['img_per_s']
            details.append(f'{model} {precision}: {ratio:.2f}x')
            oks.append(ratio >= INFER_MIN_SPEEDUP)
    rows.append([f'backbone inference img/s at 224 >= {INFER_MIN_SPEEDUP}x the torch path',
                 _result(all(oks) if oks else None), '; '.join(details) or '-'])
    # training memory at 800x1333 below the torch path
    details, oks = [], []
    for (model, precision), paths in _cells(backbones.get('backbone-800x1333-train',
                                                          {})).items():
        d, t = paths.get('default'), paths.get('torch')
        if not d or d.get('error') or d.get('peak_mb') is None:
            details.append(f'{model} {precision}: default path {d and d.get("error")}')
            oks.append(False)
        elif not t or t.get('error') or t.get('peak_mb') is None:
            details.append(f'{model} {precision}: torch path {t and t.get("error")}')
            oks.append(bool(t and t.get('error') == 'OOM'))
        else:
            details.append(f'{model} {precision}: {d["peak_mb"]:.0f} vs {t["peak_mb"]:.0f} MiB')
            oks.append(d['peak_mb'] < t['peak_mb'])
    rows.append(['backbone training peak memory at 800x1333 below the torch path',
                 _result(all(oks) if oks else None), '; '.join(details) or '-'])
    return rows


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors='replace')
    except OSError:
        return ''


def _tail(text: str, lines: int) -> str:
    return '\n'.join(text.rstrip().splitlines()[-lines:])


def read_steps(work: Path) -> List[Dict[str, str]]:
    steps = []
    for line in _read_text(work / 'steps.tsv').splitlines():
        parts = line.split('\t')
        if len(parts) >= 3:
            steps.append(dict(name=parts[0], status=parts[1], seconds=parts[2],
                              command=parts[3] if len(parts) > 3 else ''))
    return steps


def build_report(work: Path, budget: Optional[int], total: Optional[int]):
    steps = read_steps(work)
    status = {s['name']: s['status'] for s in steps}
    scan = {dt: _read_json(work / f'scan_{dt}.json') for dt in DTYPES}
    scan = {dt: data for dt, data in scan.items() if data}
    backbones = {name: _read_json(work / f'{name}.json') for name, _ in BACKBONE_STEPS}
    backbones = {name: data for name, data in backbones.items() if data}
    official = _read_json(work / 'official.json')

    tests_out = _read_text(work / 'tests.out')
    targets = [['CUDA op and backbone tests (vs float64 reference and CPU kernel)',
                _result(tests_result(status.get('tests'), tests_out)),
                _tail(tests_out, 1) or '-'],
               ['kernel harness: every tier / dtype / option vs float64',
                _result(None if 'harness' not in status else status['harness'] == 'ok'),
                _tail(_read_text(work / 'harness.out'), 1) or '-']]
    targets += scan_targets(scan) + backbone_targets(backbones)

    md = ['# mmssm device check', '']
    md += [f'* {line}' for line in _read_text(work / 'env.out').strip().splitlines()]
    md += [f'* command: `bash tools/device_check.sh` (budget {budget} s, all steps {total} s)',
           '']
    md += ['## Steps', '', '| step | status | seconds |', '|---|---|---|']
    md += [f'| {s["name"]} | {s["status"]} | {s["seconds"]} |' for s in steps]
    md += ['', '## Targets (issue 12)', '', '| target | result | detail |', '|---|---|---|']
    md += [f'| {t} | {r} | {d} |' for t, r, d in targets]
    md += ['', '## Build', '', '```', _tail(_read_text(work / 'build.out'), 6), '```', '']
    md += ['## CUDA tests', '', '```', _tail(tests_out, 25), '```', '']
    md += ['## Kernel harness (torch-free)', '', '```',
           _tail(_read_text(work / 'harness.out'), 15) or 'not run', '```', '']
    md += ['## Selective scan', '', _read_text(work / 'scan.md').strip() or 'not measured', '']
    md += ['## Backbones', '']
    for name, title in BACKBONE_STEPS:
        text = _read_text(work / f'{name}.md').strip()
        md += [text or f'#### {title}\n\nnot measured ({status.get(name, "not run")})', '']
    if (work / 'official.md').is_file() or 'official' in status:
        md += ['## Official VMamba side by side', '',
               _read_text(work / 'official.md').strip() or 'not measured', '']
    failed = [s for s in steps if s['status'] != 'ok']
    if failed:
        md += ['## Failed steps', '']
        for s in failed:
            md += [f'### {s["name"]}: {s["status"]}', '', f'`{s["command"]}`', '', '```',
                   _tail(_read_text(work / f'{s["name"]}.out'), 30), '```', '']
    data = dict(steps=steps, targets=[dict(target=t, result=r, detail=d) for t, r, d in targets],
                scan=scan, backbones=backbones, official=official or None,
                environment=_read_text(work / 'env.out').strip().splitlines())
    return '\n'.join(md) + '\n', data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--environment', action='store_true')
    group.add_argument('--arch', action='store_true')
    group.add_argument('--check-build', action='store_true')
    group.add_argument('--work', type=Path, help='the steps\' work directory')
    parser.add_argument('--out', type=Path, help='where device_check.md/.json go')
    parser.add_argument('--budget', type=int, default=None)
    parser.add_argument('--total', type=int, default=None)
    args = parser.parse_args(argv)
    if args.environment:
        print('\n'.join(environment()))
    elif args.arch:
        print(cuda_arch())
    elif args.check_build:
        check_build()
    else:
        if args.out is None:
            parser.error('--work needs --out')
        text, data = build_report(args.work, args.budget, args.total)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / 'device_check.md').write_text(text)
        (args.out / 'device_check.json').write_text(json.dumps(data, indent=1))
        print(text)


if __name__ == '__main__':
    main()
