"""Benchmark mmssm backbones: images/s and peak memory vs input size.

For every model (``family`` or ``family:preset``), input size, precision and mode it times
two paths of the same model, in the same run:

* ``default``: what a user gets: the compiled selective-scan backend of the device
  (``mmssm._C`` on CPU, ``mmssm._C_cuda`` on CUDA) and, on CUDA, the Triton scan
  gather/merge kernels;
* ``torch``:   mmssm's pure-PyTorch path (``MMSSM_SCAN_BACKEND=torch`` -- the sequential
  reference scan -- and ``MMSSM_DISABLE_TRITON=1`` -- index_select / index_add gather
  and merge),

and prints one table with both, the speed-up (default img/s / torch img/s) and the memory
ratio (default / torch).

Peak memory is the extra memory one step needs on top of the model and its input:
``torch.cuda.max_memory_allocated() - memory_allocated()`` before the step on CUDA; on CPU
the peak resident-set size sampled every millisecond during the step minus the RSS just
before it (after ``gc.collect()`` and glibc ``malloc_trim(0)``), an estimate (short spikes
between samples can be missed; allocator caching can hide reuse).

Precisions: ``fp32`` and ``amp`` (``torch.autocast``: float16 on CUDA, bfloat16 on CPU).
Modes: ``infer`` (``model.eval()``, ``torch.no_grad()``) and ``train`` (``model.train()``,
forward + ``sum(mean(out))`` + backward, no optimizer).

Examples::

    # CPU, small: one preset per family, 224 and 512, batch 1
    python tools/analysis_tools/benchmark_backbone.py --sizes 224 512 --batch 1
    # GPU: detection / segmentation / Vim's high-resolution sizes, inference and training
    python tools/analysis_tools/benchmark_backbone.py --device cuda --batch 8 \\
        --sizes 224 512 800x1333 1248x1248 --modes infer train
    # every VMamba preset, only the default path, results as JSON
    python tools/analysis_tools/benchmark_backbone.py --models vmamba:all --paths default \\
        --json vmamba.json
"""
import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout

from mmssm import families  # noqa: E402

# Environment of each path (None = unset).
PATHS = {
    'default': {'MMSSM_SCAN_BACKEND': None, 'MMSSM_DISABLE_TRITON': None},
    'torch': {'MMSSM_SCAN_BACKEND': 'torch', 'MMSSM_DISABLE_TRITON': '1'},
}


@dataclass
class Result:
    model: str
    size: str
    batch: int
    precision: str
    mode: str
    path: str
    img_per_s: Optional[float] = None
    ms_per_iter: Optional[float] = None
    peak_mb: Optional[float] = None
    error: Optional[str] = None


# ---------------------------------------------------------------------------------------
# models and inputs
# ---------------------------------------------------------------------------------------
def expand_models(specs: Sequence[str]) -> List[Tuple[str, str]]:
    """'vmamba' -> its smallest preset, 'vmamba:all' -> every preset,
    'vmamba:base_s2l15' -> that one."""
    models = []
    for spec in specs:
        family, _, preset = spec.partition(':')
        if family not in families.names():
            raise SystemExit(f'unknown family {family!r}; choose from {families.names()}')
        smallest = families.get(family).default_preset
        presets = families.get(family).presets
        if preset == 'all':
            models += [(family, name) for name in presets]
        elif preset and preset not in presets:
            raise SystemExit(f'{family}: unknown preset {preset!r}; choose from '
                             f'{sorted(presets)} or all')
        else:
            models.append((family, preset or smallest))
    return models


def parse_size(text: str) -> Tuple[int, int]:
    """'512' -> (512, 512); '800x1333' -> (800, 1333) (height x width)."""
    try:
        parts = [int(p) for p in text.lower().replace('×', 'x').split('x')]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f'size {text!r}: expected N or HxW, e.g. 800x1333')
    return parts[0], parts[1]


def build_model(family: str, preset: str, size: Tuple[int, int]) -> torch.nn.Module:
    kwargs = {}
    size_argument = families.get(family).size_argument
    if size_argument:  # e.g. Vim's position embedding is defined for the benchmark size
        kwargs[size_argument] = size
    return families.build_backbone(family, preset, **kwargs)


# ---------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def environment(values: Dict[str, Optional[str]]):
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _rss_reader() -> Optional[Callable[[], int]]:
    """A function returning the current RSS in bytes, or None if unavailable."""
    page = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096
    if os.path.exists('/proc/self/statm'):
        def read_statm():
            with open('/proc/self/statm') as f:
                return int(f.read().split()[1]) * page
        return read_statm
    try:
        import psutil
    except ImportError:
        return None
    process = psutil.Process()
    return lambda: process.memory_info().rss


_read_rss = _rss_reader()
try:
    _libc = ctypes.CDLL('libc.so.6')
except OSError:
    _libc = None


def _trim_heap() -> None:
    gc.collect()
    if _libc is not None and hasattr(_libc, 'malloc_trim'):
        _libc.malloc_trim(0)


class RssPeak:
    """Peak RSS increase over the ``with`` block, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 1e-3):
        self.interval = interval
        self.peak = 0

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _read_rss())
            time.sleep(self.interval)

    def __enter__(self):
        _trim_heap()
        self.base = self.peak = _read_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _read_rss())
        self.delta = self.peak - self.base


def peak_memory_mb(step: Callable[[], None], device: torch.device) -> Optional[float]:
    """Extra memory (MiB) one call of ``step`` needs beyond what is allocated before."""
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if _read_rss is None:
        return None
    with RssPeak() as rss:
        step()
    return rss.delta / 2**20


def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str,
              autocast_dtype: Optional[torch.dtype]) -> Callable[[], None]:
    device_type = x.device.type

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=autocast_dtype)

    def outputs_of(out):
        return list(out) if isinstance(out, (list, tuple)) else [out]

    if mode == 'infer':
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                model(x)
    else:
        model.train()

        def step():
            for p in model.parameters():
                p.grad = None
            with autocast():
                loss = sum(out.float().mean() for out in outputs_of(model(x)))
            loss.backward()
    return step


def measure(step: Callable[[], None], device: torch.device, batch: int, warmup: int,
            iters: int) -> Tuple[float, float, Optional[float]]:
    """(img/s, ms per iteration, peak MiB): ``warmup`` untimed calls, ``iters`` timed
    calls (the median per-call time: robust to other load on shared machines). On CPU
    one more call gives the memory peak (kept out of the timing, since the sampler thread
    competes for the cores); on CUDA the allocator's peak over the timed calls is read
    instead (free to measure, and it spares the slow torch path one more step)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(max(iters, 1)):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    elapsed = statistics.median(times)
    if device.type == 'cuda':
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = peak_memory_mb(step, device)
    return batch / elapsed, elapsed * 1e3, peak


def run_one(family, preset, size, batch, precision, mode, path, device, args) -> Result:
    label = f'{family}:{preset}'
    result = Result(label, f'{size[0]}x{size[1]}', batch, precision, mode, path)
    model = x = None
    try:
        torch.manual_seed(0)
        model = build_model(family, preset, size).to(device)
        x = torch.randn(batch, 3, *size, device=device)
        amp_dtype = None
        if precision == 'amp':
            amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
        step = make_step(model, x, mode, amp_dtype)
        with environment(PATHS[path]):
            warmup = args.warmup if path == 'default' else args.torch_warmup
            iters = args.iters if path == 'default' else args.torch_iters
            result.img_per_s, result.ms_per_iter, result.peak_mb = measure(
                step, device, batch, warmup, iters)
    except Exception as err:  # noqa: BLE001 - one failed cell must not end the run
        if device.type == 'cuda' and isinstance(err, torch.cuda.OutOfMemoryError):
            result.error = 'OOM'
        else:
            result.error = f'{type(err).__name__}: {str(err).splitlines()[0][:80]}'
    finally:
        del model, x
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        _trim_heap()
    return result


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def describe_environment(device: torch.device) -> List[str]:
    from mmssm.ops.kernels import backend_available
    from mmssm.ops.scan_patterns import _triton_kernels
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        commit += ' (with uncommitted changes)' if dirty else ''
    except (OSError, subprocess.CalledProcessError):
        commit = 'unknown'
    if device.type == 'cuda':
        where = f'{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}'
    else:
        where = f'CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads'
        if hasattr(os, 'getloadavg'):
            where += ', load average %.1f at start' % os.getloadavg()[0]
    backend = 'cuda' if device.type == 'cuda' else 'cpu'
    triton = _triton_kernels()
    lines = [
        f'commit {commit}; torch {torch.__version__}; {where}',
        f'default path: selective-scan backend {backend!r} '
        f'({"available" if backend_available(backend) else "NOT available"}), gather/merge '
        + ('triton ' + __import__('triton').__version__
           if device.type == 'cuda' and triton is not None else 'torch'),
        'torch path: MMSSM_SCAN_BACKEND=torch, MMSSM_DISABLE_TRITON=1',
        'peak memory: ' + ('torch.cuda.max_memory_allocated - allocated before the step'
                           if device.type == 'cuda' else
                           'RSS increase during one step, sampled every 1 ms'),
    ]
    return lines


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown_table(results: List[Result], paths: Sequence[str]) -> str:
    cells: Dict[tuple, Dict[str, Result]] = {}
    for r in results:
        cells.setdefault((r.model, r.size, r.batch, r.precision, r.mode), {})[r.path] = r
    header = ['model', 'input', 'batch', 'precision', 'mode']
    for path in paths:
        header += [f'{path} img/s', f'{path} peak MiB']
    if set(paths) == {'default', 'torch'}:
        header += ['speed-up vs torch', 'memory vs torch']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    notes = []
    for key, by_path in cells.items():
        row = [str(k) for k in key]
        for path in paths:
            r = by_path.get(path)
            if r is None or r.error:
                row += ['error' if r else '-', '-']
                if r is not None:
                    notes.append(f'{"/".join(row[:5])} {path}: {r.error}')
            else:
                row += [_fmt(r.img_per_s, 2), _fmt(r.peak_mb, 0)]
        if set(paths) == {'default', 'torch'}:
            d, t = by_path.get('default'), by_path.get('torch')
            ok = d and t and not d.error and not t.error
            row.append(f'{d.img_per_s / t.img_per_s:.2f}x' if ok else '-')
            row.append(f'{d.peak_mb / t.peak_mb:.2f}x'
                       if ok and d.peak_mb is not None and t.peak_mb else '-')
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines + [f'\n{n}' for n in notes])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--models', nargs='+', default=sorted(families.names()),
                        help='family (its smallest preset), family:preset or family:all '
                             f'(families: {", ".join(sorted(families.names()))})')
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[(224, 224), (512, 512)],
                        help='input sizes, N or HxW (e.g. 224 512 800x1333 1248x1248)')
    parser.add_argument('--batch', type=int, default=None,
                        help='batch size (default 1 on CPU, 8 on CUDA)')
    parser.add_argument('--precisions', nargs='+', choices=['fp32', 'amp'],
                        default=['fp32', 'amp'],
                        help='amp = autocast float16 on CUDA, bfloat16 on CPU')
    parser.add_argument('--modes', nargs='+', choices=['infer', 'train'], default=['infer'])
    parser.add_argument('--paths', nargs='+', choices=list(PATHS), default=list(PATHS),
                        help='default: compiled scan (+ triton gather/merge on CUDA); '
                             'torch: the pure-PyTorch path')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed steps (default 1 on CPU, 5 on CUDA; torch path <= 1)')
    parser.add_argument('--iters', type=int, default=None,
                        help='timed steps of the default path (default 2 on CPU, 20 on CUDA)')
    parser.add_argument('--torch-iters', type=int, default=1,
                        help='timed steps of the (slow) torch path (default 1)')
    parser.add_argument('--torch-warmup', type=int, default=None,
                        help='untimed steps of the torch path (default min(--warmup, 1); '
                             '0 is fair when the default path ran the same shapes just '
                             'before, as it does, and cuDNN is already tuned)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--json', type=Path, default=None,
                        help='also write results here (rewritten after every cell)')
    parser.add_argument('--markdown', type=Path, default=None,
                        help='also write the environment and the table here as markdown '
                             '(rewritten after every cell, so a run stopped early leaves '
                             'what it measured)')
    parser.add_argument('--title', default=None,
                        help='heading of the --markdown section')
    args = parser.parse_args(argv)
    on_cuda = args.device.startswith('cuda')
    args.batch = args.batch or (8 if on_cuda else 1)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    args.iters = args.iters or (20 if on_cuda else 2)
    if args.torch_warmup is None:
        args.torch_warmup = min(args.warmup, 1)
    return args


def write_outputs(args, header: List[str], results: List[Result], done: bool) -> None:
    """The --json / --markdown files for the cells measured so far."""
    if args.json:
        args.json.write_text(json.dumps(dict(environment=header, complete=done,
                                             results=[asdict(r) for r in results]),
                                        indent=1))
    if args.markdown:
        lines = [f'#### {args.title}' if args.title else '#### backbones', '']
        lines += [f'* {line}' for line in header]
        if not done:
            lines.append('* INCOMPLETE: the run stopped before every cell was measured')
        lines += ['', markdown_table(results, args.paths), '']
        args.markdown.write_text('\n'.join(lines))


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: no CUDA device is available '
                         f'(torch {torch.__version__}, torch.cuda.is_available() is False)')
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    models = expand_models(args.models)
    header = describe_environment(device)
    for line in header:
        print(f'# {line}', flush=True)
    results = []
    for family, preset in models:
        for size in args.sizes:
            for precision in args.precisions:
                for mode in args.modes:
                    for path in args.paths:
                        r = run_one(family, preset, size, args.batch, precision, mode, path,
                                    device, args)
                        results.append(r)
                        status = r.error or (f'{r.img_per_s:.2f} img/s, {r.ms_per_iter:.0f} '
                                             f'ms/iter, peak {_fmt(r.peak_mb, 0)} MiB')
                        print(f'# {r.model} {r.size} b{r.batch} {precision} {mode} '
                              f'{path}: {status}', flush=True)
                        write_outputs(args, header, results, done=False)
    if device.type == 'cpu' and hasattr(os, 'getloadavg'):
        print('# load average %.1f at the end' % os.getloadavg()[0])
    print()
    print(markdown_table(results, args.paths))
    write_outputs(args, header, results, done=True)
    # A cell that failed for another reason than running out of memory is a bug to see.
    failed = [r for r in results if r.error and r.error != 'OOM']
    if failed:
        raise SystemExit(f'{len(failed)} cell(s) failed: ' + '; '.join(
            f'{r.model} {r.size} {r.precision} {r.mode} {r.path}: {r.error}' for r in failed))


if __name__ == '__main__':
    main()
