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
from mmssm.apis.cpu_heap import steady_heap, trim_heap  # noqa: E402

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


def _trim_heap() -> None:
    gc.collect()
    trim_heap()


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
    peers = parser.add_argument_group(
        'peer comparison (CPU)', '--peers replaces the default-vs-torch table with the '
        'issue-16 report: the mmssm models (--models, default the papers\' tiny sizes) and '
        'mmpretrain backbones at each --sizes, their MACs (mmssm.apis.analysis.count_flops) '
        'and fraction of the in-process torch.mm rate, then growth, training step and '
        'thread scaling, with the targets met or not')
    peers.add_argument('--peers', nargs='*', default=None, choices=sorted(PEERS),
                       metavar='PEER', help=f'mmpretrain peers: {", ".join(PEERS)} (all '
                                            'four when given without names)')
    peers.add_argument('--growth-size', type=int, default=896,
                       help='also time the first model and swin-t here (0: skip)')
    peers.add_argument('--train-batch', type=int, default=2,
                       help='training step of the first model vs swin-t at 224 (0: skip)')
    peers.add_argument('--thread-size', type=int, default=512,
                       help='first model with 1 vs 2 threads at this size, once with the '
                            'default OpenMP wait policy and once with OMP_WAIT_POLICY='
                            'PASSIVE, each in a fresh process (0: skip)')
    peers.add_argument('--thread-probe', nargs=2, default=None, metavar=('MODEL', 'SIZE'),
                       help=argparse.SUPPRESS)  # internal: one process per wait policy
    peers.add_argument('--heap-models', nargs='*', default=[], metavar='MODEL',
                       help='also time each of these models (mmssm or peer names) alone in '
                            'a fresh process at the first --sizes, once with glibc\'s own heap '
                            'policy and once with the steady one, and count its page faults '
                            'per forward')
    peers.add_argument('--heap-probe', nargs=2, default=None, metavar=('MODEL', 'SIZE'),
                       help=argparse.SUPPRESS)  # internal: one process per heap policy
    peers.add_argument('--heap', choices=['steady', 'default'], default='steady',
                       help="'steady': keep freed memory in glibc's heap for the whole run "
                            '(no page faults of memory returned to the OS between timed '
                            "calls; see mmssm.apis.cpu_heap); 'default': glibc's own policy")
    peers.add_argument('--timer', choices=['wall', 'process'], default='wall',
                       help="'process': CPU time for the single-thread measurements "
                            '(the work alone on a shared machine)')
    args = parser.parse_args(argv)
    args.models_given = '--models' in (sys.argv[1:] if argv is None else argv)
    on_cuda = args.device.startswith('cuda')
    args.batch = args.batch or (8 if on_cuda else 1)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    args.iters = args.iters or (20 if on_cuda else (5 if args.peers is not None else 2))
    if args.peers is not None:
        if on_cuda:
            parser.error('--peers compares CPU times')
        args.peers = args.peers or list(PEERS)
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



# ---------------------------------------------------------------------------------------
# --peers: mmssm backbones against mmpretrain's (issue 16's targets), CPU
# ---------------------------------------------------------------------------------------
# The mmssm models of the comparison (the sizes of the papers' tables) and the peers.
PEER_MODELS = ['vmamba:tiny_s1l8', 'msvmamba:tiny', 'efficientvmamba:tiny', 'mobilemamba:b1',
               'vim:tiny']
PEERS = {
    # pad_small_map: maps under the 7 x 7 window (inputs under 224) are padded, not refused
    'swin-t': ('SwinTransformer', dict(arch='tiny', pad_small_map=True), True),
    'convnext-t': ('ConvNeXt', dict(arch='tiny'), False),
    'resnet50': ('ResNet', dict(depth=50), False),
    'deit-ti': ('VisionTransformer', dict(arch='deit-tiny'), True),
}
# (mmssm model, peer, bound): time(model) <= bound * time(peer) at equal input.
PEER_TARGETS = [('vmamba:tiny_s1l8', 'swin-t', 1.0), ('msvmamba:tiny', 'swin-t', 1.0),
                ('vim:tiny', 'deit-ti', 2.0)]
GEMM_FRACTION_TARGET = 0.65
GROWTH_TARGET = 17.0  # time(896) / time(224) for 16x the FLOPs
TRAIN_TARGET = 1.15  # training step, VMamba-T / Swin-T
THREADS_IDLE_TARGET = 1.6  # 2 threads vs 1, VMamba-T at 512, idle machine
THREADS_BUSY_BOUND = 1.2  # ... and never this much slower on a busy one


def build_peer(name: str, size: Tuple[int, int]) -> torch.nn.Module:
    """An mmpretrain backbone (no torchvision needed: mmssm.compat)."""
    import mmpretrain.models.backbones as backbones
    class_name, kwargs, sized = PEERS[name]
    kwargs = dict(kwargs)
    if sized:  # position embeddings / windows defined for the benchmark size
        kwargs['img_size'] = size
    return getattr(backbones, class_name)(**kwargs)


def build_any(name: str, size: Tuple[int, int], train: bool = False) -> torch.nn.Module:
    """An mmssm model ('family[:preset]') or a peer, in train or eval mode. (mmpretrain's
    backbones return None from ``train()``, so the mode is not set by chaining.)"""
    if name in PEERS:
        model = build_peer(name, size)
    else:
        family, _, preset = name.partition(':')
        model = build_model(family, preset or families.get(family).default_preset, size)
    model.train(train)
    return model


GEMM = 'torch.mm 1024^2'
GEMM_CALLS = 8  # per round, interleaved with the models' calls


def gemm_rate(repeats: int = 20) -> float:
    """Multiply-adds per second of this process's torch.mm on 1024 x 1024 fp32 (median
    of ``repeats`` calls, with the current torch thread count)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 1024 ** 3 / statistics.median(times)


def model_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward by the project's own counter (scan included)."""
    from mmssm.apis.analysis import count_flops
    return count_flops(model, x)['flops']


def interleaved_rounds(steps: Dict[str, Callable[[], None]], warmup: int, rounds: int,
                       clock: Callable[[], float]) -> Dict[str, List[float]]:
    """Seconds of each step in each round, timed in alternation (one call of each per
    round), so that a load change on a shared machine hits every model alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = clock()
            step()
            times[name].append(clock() - start)
    return times


def medians(rounds: Dict[str, List[float]]) -> Dict[str, float]:
    """Median seconds of each step of :func:`interleaved_rounds`."""
    return {name: statistics.median(t) for name, t in rounds.items()}


def interleaved_medians(steps: Dict[str, Callable[[], None]], warmup: int, rounds: int,
                        clock: Callable[[], float]) -> Dict[str, float]:
    """Median seconds of each step over :func:`interleaved_rounds`."""
    return medians(interleaved_rounds(steps, warmup, rounds, clock))


def round_spread(per_round: Sequence[float]) -> List[float]:
    """[min, max] of a target's value computed round by round (from the calls of one
    round only): how far a slow spell on a shared machine moved it. The value from the
    medians always lies in this range (each round's times bound the medians' order)."""
    return [min(per_round), max(per_round)]


def ratio_spread(numerator: Sequence[float], denominator: Sequence[float],
                 scale: float = 1.0) -> List[float]:
    """:func:`round_spread` of scale * numerator / denominator, round by round."""
    return round_spread([scale * a / b for a, b in zip(numerator, denominator)])


def load_average() -> str:
    return '%.1f' % os.getloadavg()[0] if hasattr(os, 'getloadavg') else 'n/a'


def run_peers(args) -> None:
    """The issue-16 report: inference (fp32, batch 1, eval) of the mmssm models and the
    mmpretrain peers at each size, their MACs and fraction of the in-process GEMM rate;
    growth to --growth-size; a training step (batch 2); 1 vs 2 threads."""
    device = torch.device('cpu')
    models = args.models if args.models_given else PEER_MODELS
    names = list(models) + list(args.peers)
    threads = args.threads or 1
    torch.set_num_threads(threads)
    clock = time.process_time if args.timer == 'process' and threads == 1 else time.perf_counter
    header = describe_environment(device)
    if args.heap == 'steady' and steady_heap():
        header.append('glibc heap kept between calls (mallopt M_MMAP_THRESHOLD = 32 MiB, '
                      'M_TRIM_THRESHOLD = 1 GiB): no page faults of memory returned '
                      'to the OS between timed calls, for every model alike')
    header.append(f'peers: {threads} thread(s), fp32, batch 1, eval, no_grad; median of '
                  f'{args.iters} interleaved rounds after {args.warmup} warm-up call(s), '
                  f'{"CPU" if clock is time.process_time else "wall"} time')
    for line in header:
        print(f'# {line}', flush=True)
    report = dict(environment=header, inference=[], targets=[])
    rate = gemm_rate()
    report['gemm_mac_per_s'] = rate
    print(f'# torch.mm 1024^2 fp32: {rate / 1e9:.1f} GMAC/s (load average {load_average()})',
          flush=True)

    def measure_size(size, which):
        built = {n: build_any(n, size) for n in which}
        x = torch.randn(1, 3, *size)
        macs = {n: model_macs(m, x) for n, m in built.items()}

        def infer(model):
            def step():
                with torch.no_grad():
                    model(x)
            return step
        steps = {n: infer(m) for n, m in built.items()}
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        steps[GEMM] = lambda: [torch.mm(a, b) for _ in range(GEMM_CALLS)]
        rounds = interleaved_rounds(steps, args.warmup, args.iters, clock)
        del built
        _trim_heap()
        return rounds, macs

    times_by_size = {}
    for size in args.sizes:
        rounds, macs = measure_size(size, names)
        times = medians(rounds)
        times_by_size[size] = times
        # the GEMM rate of these rounds (measured between the models' calls)
        rate = GEMM_CALLS * 1024 ** 3 / times[GEMM]
        report.setdefault('gemm_mac_per_s_by_size', {})[size[0]] = rate
        load = load_average()
        for n in names:
            row = dict(model=n, size=f'{size[0]}x{size[1]}', ms=times[n] * 1e3,
                       gmacs=macs[n] / 1e9, gemm_fraction=macs[n] / times[n] / rate,
                       gemm_gmac_per_s=rate / 1e9, load=load)
            report['inference'].append(row)
            print(f'# {n} {row["size"]}: {row["ms"]:.1f} ms, {row["gmacs"]:.2f} GMAC, '
                  f'{row["gemm_fraction"]:.2f} of the GEMM rate (load {load})', flush=True)
        for model, peer, bound in PEER_TARGETS:
            if model in times and peer in times:
                ratio = times[model] / times[peer]
                report['targets'].append(dict(
                    target=f'{model} <= {bound:g}x {peer} at {size[0]}', value=ratio,
                    met=ratio <= bound, load=load,
                    rounds=ratio_spread(rounds[model], rounds[peer])))
        for n in models:
            frac = macs[n] / times[n] / rate
            report['targets'].append(dict(
                target=f'{n} >= {GEMM_FRACTION_TARGET} of the GEMM rate at {size[0]}',
                value=frac, met=frac >= GEMM_FRACTION_TARGET, load=load,
                # MACs / time / (GEMM MACs / GEMM time), round by round
                rounds=ratio_spread(rounds[GEMM], rounds[n],
                                    macs[n] / (GEMM_CALLS * 1024 ** 3))))

    first = models[0]
    if args.growth_size and (224, 224) in times_by_size:
        size = (args.growth_size, args.growth_size)
        which = [first] + (['swin-t'] if 'swin-t' in args.peers else [])
        rounds, _ = measure_size(size, which)
        load = load_average()
        for n in which:
            growth = statistics.median(rounds[n]) / times_by_size[(224, 224)][n]
            print(f'# {n}: 224 -> {size[0]}: time x {growth:.1f} (load {load})', flush=True)
            report['targets'].append(dict(target=f'{n}: time({size[0]}) / time(224) <= '
                                                 f'{GROWTH_TARGET:g}', value=growth,
                                          met=growth <= GROWTH_TARGET, load=load))

    if args.train_batch and 'swin-t' in args.peers:
        x = torch.randn(args.train_batch, 3, 224, 224)
        built = {n: build_any(n, (224, 224), train=True) for n in (first, 'swin-t')}
        steps = {n: make_step(m, x, 'train', None) for n, m in built.items()}
        rounds = interleaved_rounds(steps, args.warmup, args.iters, clock)
        times = medians(rounds)
        ratio = times[first] / times['swin-t']
        load = load_average()
        print(f'# training step (batch {args.train_batch}, 224): {first} '
              f'{times[first] * 1e3:.0f} ms, swin-t {times["swin-t"] * 1e3:.0f} ms, '
              f'{ratio:.2f}x (load {load})', flush=True)
        report['targets'].append(dict(target=f'training step {first} <= {TRAIN_TARGET:g}x '
                                             'swin-t', value=ratio, met=ratio <= TRAIN_TARGET,
                                      load=load,
                                      rounds=ratio_spread(rounds[first], rounds['swin-t'])))
        del built, steps
        _trim_heap()

    if args.thread_size:
        # Each OpenMP wait policy in its own process: libgomp reads it once, at start.
        busy = load_is_busy()
        for policy in ('default', 'PASSIVE'):
            probe = thread_probe_subprocess(first, args.thread_size, policy, args)
            speedup = probe['t1'] / probe['t2']
            label = ('default OpenMP wait policy' if policy == 'default'
                     else f'OMP_WAIT_POLICY={policy}')
            print(f'# {first} {args.thread_size}, {label}: 1 thread {probe["t1"] * 1e3:.0f} '
                  f'ms, 2 threads {probe["t2"] * 1e3:.0f} ms: {speedup:.2f}x (load '
                  f'{probe["load"]}, {"busy" if busy else "idle"} machine)', flush=True)
            if busy:
                report['targets'].append(dict(
                    target=f'busy machine, {label}: 2 threads no more than '
                           f'{THREADS_BUSY_BOUND:g}x slower than 1 ({first}, {args.thread_size})',
                    value=1 / speedup, met=1 / speedup <= THREADS_BUSY_BOUND,
                    load=probe['load']))
            else:
                report['targets'].append(dict(
                    target=f'idle machine, {label}: 2 threads >= {THREADS_IDLE_TARGET:g}x '
                           f'faster than 1 ({first}, {args.thread_size})',
                    value=speedup, met=speedup >= THREADS_IDLE_TARGET, load=probe['load']))

    heap_size = args.sizes[0][0]
    for name in args.heap_models:
        probes = {heap: heap_probe_subprocess(name, heap_size, heap, args)
                  for heap in ('default', 'steady')}
        row = dict(model=name, size=f'{heap_size}x{heap_size}', **{
            f'{heap}_{key}': value for heap, probe in probes.items()
            for key, value in probe.items()})
        report.setdefault('heap', []).append(row)
        print(f'# {name} {heap_size} alone in a process: glibc default heap '
              f'{row["default_ms"]:.1f} ms, {row["default_faults"]:.0f} page faults per '
              f'forward; steady heap {row["steady_ms"]:.1f} ms, {row["steady_faults"]:.0f} '
              f'(load {row["steady_load"]})', flush=True)

    print()
    print(peers_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text('\n'.join([f'#### {args.title or "mmssm vs mmpretrain"}', '']
                                           + [f'* {line}' for line in header]
                                           + ['', peers_markdown(report), '']))


def load_is_busy() -> bool:
    """A 1-minute load average of at least the core count: other work keeps the cores."""
    return hasattr(os, 'getloadavg') and os.getloadavg()[0] >= (os.cpu_count() or 1)


def thread_probe(model_name: str, size: int, iters: int, warmup: int,
                 heap: str = 'steady') -> dict:
    """Wall time of one forward with 1 and with 2 torch threads (interleaved medians)."""
    if heap == 'steady':
        steady_heap()
    model = build_any(model_name, (size, size))
    x = torch.randn(1, 3, size, size)

    def infer_with(n):
        def step():
            torch.set_num_threads(n)
            with torch.no_grad():
                model(x)
        return step
    times = interleaved_medians({'1': infer_with(1), '2': infer_with(2)}, warmup, iters,
                                time.perf_counter)
    return dict(t1=times['1'], t2=times['2'], load=load_average())


def thread_probe_subprocess(model_name: str, size: int, policy: str, args) -> dict:
    """thread_probe in a fresh process with OMP_WAIT_POLICY unset ('default') or set."""
    env = dict(os.environ)
    env.pop('OMP_WAIT_POLICY', None)
    env.pop('GOMP_SPINCOUNT', None)
    if policy != 'default':
        env['OMP_WAIT_POLICY'] = policy
    return _run_probe(['--thread-probe', model_name, str(size), '--iters', str(args.iters),
                       '--warmup', str(args.warmup), '--heap', args.heap], env,
                      f'thread probe ({policy})')


def _run_probe(probe_args: List[str], env: Dict[str, str], what: str) -> dict:
    """Run this script with ``probe_args`` in a fresh process; its last stdout line is
    the probe's JSON result."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())] + probe_args,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'{what} failed:\n{proc.stderr[-2000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def heap_probe(model_name: str, size: int, iters: int, warmup: int, heap: str) -> dict:
    """CPU time (user + system: page faults included) and minor page faults of one
    forward of a model alone in this process, medians over ``iters`` calls."""
    import resource  # POSIX only, like the probe's subject
    if heap == 'steady' and not steady_heap():
        raise SystemExit('--heap steady: this process does not run on glibc')
    model = build_any(model_name, (size, size))
    x = torch.randn(1, 3, size, size)
    times, faults = [], []
    with torch.no_grad():
        for _ in range(warmup + 1):  # + the first call, which builds what is cached
            model(x)
        for _ in range(iters):
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
            model(x)
            times.append(time.process_time() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before.ru_minflt)
    return dict(ms=statistics.median(times) * 1e3, faults=statistics.median(faults),
                load=load_average())


def heap_probe_subprocess(model_name: str, size: int, heap: str, args) -> dict:
    """heap_probe in a fresh process (glibc's heap state is per process)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'GLIBC_TUNABLES')}
    return _run_probe(['--peers', '--heap-probe', model_name, str(size), '--iters',
                       str(args.iters), '--warmup', str(args.warmup), '--threads',
                       str(args.threads or 1), '--heap', heap], env,
                      f'heap probe ({model_name}, {heap})')


def peers_markdown(report: dict) -> str:
    rows = report['inference']
    lines = ['GEMM rate: torch.mm 1024^2 fp32 in this process, timed between the models\' '
             'calls; GMAC by mmssm.apis.analysis.count_flops (1 multiply-add = 1 FLOP, scan '
             'included); fraction = GMAC / time / GEMM rate.', '',
             '| model | input | ms | GMAC | GEMM GMAC/s | fraction of GEMM rate | load |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["model"]} | {r["size"]} | {r["ms"]:.1f} | {r["gmacs"]:.2f} | '
                     f'{r["gemm_gmac_per_s"]:.1f} | {r["gemm_fraction"]:.2f} | {r["load"]} |')
    lines += ['', 'measured: from the medians; per round: the lowest and highest value '
              'computed from one round\'s calls alone (the spread a slow spell of a shared '
              'machine causes; blank where the value pairs no calls of one round).', '',
              '| target | measured | per round | met | load |', '|---|---|---|---|---|']
    for t in report['targets']:
        spread = ('%.2f - %.2f' % tuple(t['rounds'])) if t.get('rounds') else ''
        lines.append(f'| {t["target"]} | {t["value"]:.2f} | {spread} | '
                     f'{"yes" if t["met"] else "NO"} | {t["load"]} |')
    if report.get('heap'):
        lines += ['', 'Each model alone in a fresh process, CPU time (user + system) and minor '
                  'page faults per forward (medians), with glibc\'s own heap policy and with '
                  'the steady one (mmssm.apis.cpu_heap):', '',
                  '| model | input | default heap: ms | page faults | steady heap: ms | '
                  'page faults | default / steady | load |', '|---|---|---|---|---|---|---|---|']
        for r in report['heap']:
            lines.append(f'| {r["model"]} | {r["size"]} | {r["default_ms"]:.1f} | '
                         f'{r["default_faults"]:.0f} | {r["steady_ms"]:.1f} | '
                         f'{r["steady_faults"]:.0f} | {r["default_ms"] / r["steady_ms"]:.2f} | '
                         f'{r["steady_load"]} |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.thread_probe:
        name, size = args.thread_probe
        print(json.dumps(thread_probe(name, int(size), args.iters, args.warmup, args.heap)))
        return None
    if args.heap_probe:
        name, size = args.heap_probe
        torch.set_num_threads(args.threads or 1)
        print(json.dumps(heap_probe(name, int(size), args.iters, args.warmup, args.heap)))
        return None
    if args.peers is not None:
        return run_peers(args)
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
