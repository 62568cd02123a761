"""Benchmark the selective-scan backends on the vision shapes of
shared/specs/selective_scan.md §4.

For every shape and every available backend ('torch', 'cpu', 'cuda') it times the
forward (no autograd) and forward + backward, and prints one table with the time per
call, the time per state update (batch x channels x L x N of them per call), the
speed-up over the 'torch' backend measured in the same run and, on CUDA, the
backward alone (forward + backward minus forward), the achieved bandwidth and time over
the HBM floor of each pass (spec §4.3 byte model: every input read once, every output
written once; the floor is bytes / --hbm-bandwidth, or / the device-to-device copy
bandwidth measured at the start of the run with --measure-bandwidth). CUDA times come
from CUDA events around batches of calls (median of the batches). A backend that runs
out of GPU memory on a shape is reported as OOM and the run goes on. --json / --markdown
also write the results to files (tools/device_check.sh builds its report from them).

Examples::

    python tools/analysis_tools/benchmark_scan.py                       # CPU, batch 1
    python tools/analysis_tools/benchmark_scan.py --device cuda --dtype float16
    python tools/analysis_tools/benchmark_scan.py --shapes vim_ti vmamba_t_s1 --batch 4
    python tools/analysis_tools/benchmark_scan.py --device cuda --dtype bfloat16 \
        --measure-bandwidth --json scan_bf16.json --markdown report.md
    # this checkout's CPU kernels against another build, in the same process (--rounds:
    # also alternated, 15 rounds, the median ratio: for a shared or noisy machine)
    python tools/analysis_tools/benchmark_scan.py --threads 1 --timer process \
        --backends cpu --cpu-baseline /path/to/old/mmssm/_C.cpython-311-x86_64-linux-gnu.so \
        --rounds 15
"""
import argparse
import json
import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from mmssm.apis.cpu_heap import steady_heap
from mmssm.ops import kernels, selective_scan
from mmssm.ops.kernels import SelectiveScanFn, backend_available

BASELINE = 'cpu-baseline'


@dataclass(frozen=True)
class Shape:
    name: str
    dim: int  # Dk, channels of one scan call
    seqlen: int
    dstate: int
    groups: int
    has_z: bool
    gpu_batch: int  # the batch of the spec's anchor (GPU); CPU runs use --batch
    note: str


# spec §4.1 / §4.4: VMamba-T[s1l8] at 224 (N=1, G=K=4, D + delta_bias, softplus), its
# stage 1 at detection size, Vim-Ti (N=16, G=1, z gate), vanilla VMamba-T stage 1 (N=16).
SHAPES = [
    Shape('vmamba_t_s1', 384, 3136, 1, 4, False, 128, 'VMamba-T[s1l8] stage 1, 224'),
    Shape('vmamba_t_s2', 768, 784, 1, 4, False, 128, 'VMamba-T[s1l8] stage 2, 224'),
    Shape('vmamba_t_s3', 1536, 196, 1, 4, False, 128, 'VMamba-T[s1l8] stage 3, 224'),
    Shape('vmamba_t_s4', 3072, 49, 1, 4, False, 128, 'VMamba-T[s1l8] stage 4, 224'),
    Shape('vmamba_t_det_s1', 384, 64000, 1, 4, False, 2,
          'VMamba-T[s1l8] stage 1, 1280x800 detection'),
    Shape('vim_ti', 384, 197, 16, 1, True, 128, 'Vim-Ti mixer call, 224'),
    Shape('vanilla_vmamba_t_s1', 768, 3136, 16, 4, False, 128,
          'vanilla VMamba-T stage 1 (N=16), 224'),
]
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}


def make_inputs(shape: Shape, batch: int, dtype, device, requires_grad: bool):
    gen = torch.Generator().manual_seed(0)

    def rand(*size, scale=1.0, offset=0.0, dt=dtype):
        t = torch.rand(*size, generator=gen) * scale + offset
        return t.to(device=device, dtype=dt).requires_grad_(requires_grad)

    def randn(*size, dt=dtype):
        t = torch.randn(*size, generator=gen)
        return t.to(device=device, dtype=dt).requires_grad_(requires_grad)

    d, L, n, g = shape.dim, shape.seqlen, shape.dstate, shape.groups
    return dict(
        u=randn(batch, d, L),
        delta=rand(batch, d, L, scale=0.5, offset=-4.0),  # dt ~ softplus(-4) ~ 0.02
        A=rand(d, n, scale=-1.0, offset=-0.5, dt=torch.float32),
        B=randn(batch, g, n, L),
        C=randn(batch, g, n, L),
        D=randn(d, dt=torch.float32),
        z=randn(batch, d, L) if shape.has_z else None,
        delta_bias=rand(d, scale=0.5, dt=torch.float32),
    )


def bytes_moved(shape: Shape, batch: int, itemsize: int):
    """(forward, backward) bytes of the spec §4.3 model for this implementation:
    forward reads u, delta (, z) and writes out, all in the input dtype; backward reads
    u, delta, dout (, z) and writes du, ddelta (, dz); B and C are read once per pass
    and dB / dC written once (4 x itemsize per B/C element in the backward)."""
    e = batch * shape.dim * shape.seqlen
    eg = batch * shape.groups * shape.dstate * shape.seqlen
    z = 1 if shape.has_z else 0
    fwd = e * itemsize * (3 + z) + eg * 2 * itemsize
    bwd = e * itemsize * (5 + 2 * z) + eg * 4 * itemsize
    return fwd, bwd


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def load_extension(path: str):
    """Import a built CPU extension (mmssm._C) from ``path`` under another name."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('_C', path)  # its init is PyInit__C
    if spec is None:
        raise SystemExit(f'--cpu-baseline: cannot load {path!r}')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_call(fn: Callable[[], None], device, warmup: int, min_reps: int, max_reps: int,
              budget_s: float, clock: Callable[[], float] = time.perf_counter) -> float:
    """Mean seconds per call over at least ``min_reps`` calls, continuing until
    ``budget_s`` seconds or ``max_reps`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    reps, start = 0, clock()
    while True:
        fn()
        reps += 1
        synchronize(device)
        elapsed = clock() - start
        if reps >= max_reps or (reps >= min_reps and elapsed >= budget_s):
            return elapsed / reps


def time_call_cuda(fn: Callable[[], None], device, warmup: int, min_reps: int,
                   max_reps: int, budget_s: float, batches: int = 5) -> float:
    """Median seconds per call on a CUDA device, from CUDA events around batches of
    back-to-back calls (no host synchronisation inside a batch). One calibration batch of
    ``min_reps`` calls sizes ``batches`` batches to fill about ``budget_s`` in all."""
    for _ in range(warmup):
        fn()

    def batch_time(calls: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls

    first = batch_time(max(min_reps, 1))
    if max_reps <= min_reps:
        return first
    calls = int(min(max(budget_s / batches / max(first, 1e-9), 1), max(max_reps // batches, 1)))
    return statistics.median(batch_time(calls) for _ in range(batches))


def measure_copy_bandwidth(device, nbytes: int = 2 << 30, reps: int = 10) -> float:
    """Device-to-device copy bandwidth in B/s, counting bytes read plus bytes written
    (the ceiling METHOD-style rooflines use): median of ``reps`` copies of ``nbytes``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    t = time_call_cuda(lambda: dst.copy_(src), device, warmup=1, min_reps=1,
                       max_reps=reps, budget_s=0.2, batches=reps)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / t


def make_calls(shape: Shape, batch: int, dtype, device, backend: str, args):
    """The two timed calls of a backend on a shape: (forward, forward + backward), each
    returning the forward's output."""
    softplus = True
    fwd_in = make_inputs(shape, batch, dtype, device, requires_grad=False)

    def scan(x):
        if args.cpu_baseline and backend in ('cpu', BASELINE):
            # Both builds through the same autograd Function (no input validation), so
            # that the comparison measures the kernels.
            return SelectiveScanFn.apply(x['u'], x['delta'], x['A'], x['B'], x['C'], x['D'],
                                         x['z'], x['delta_bias'], softplus, backend)[0]
        return selective_scan(**x, delta_softplus=softplus, backend=backend)

    def forward():
        with torch.no_grad():
            return scan(fwd_in)

    train_in = make_inputs(shape, batch, dtype, device, requires_grad=True)
    grad = torch.randn(batch, shape.dim, shape.seqlen,
                       generator=torch.Generator().manual_seed(1)).to(device, dtype)

    def forward_backward():
        out = scan(train_in)
        out.backward(grad)
        for t in train_in.values():
            if t is not None:
                t.grad = None
        return out

    return forward, forward_backward


def bench_backend(shape: Shape, batch: int, dtype, device, backend: str, args):
    is_torch = backend == 'torch'
    warmup = 0 if is_torch else args.warmup
    min_reps = 1 if is_torch else args.min_reps
    max_reps = args.torch_reps if is_torch else args.max_reps
    forward, forward_backward = make_calls(shape, batch, dtype, device, backend, args)
    clock = time.process_time if args.timer == 'process' else time.perf_counter

    def timed(fn):
        if device.type == 'cuda':
            return time_call_cuda(fn, device, warmup, min_reps, max_reps, args.budget)
        return time_call(fn, device, warmup, min_reps, max_reps, args.budget, clock)

    return timed(forward), timed(forward_backward)


def interleaved_ratios(new: Callable[[], object], base: Callable[[], object], rounds: int,
                       calls: int, clock: Callable[[], float] = time.perf_counter
                       ) -> List[float]:
    """base's time / new's time per round: each round times ``calls`` calls of each,
    the order alternating from round to round (new first in even rounds), so that a
    machine whose speed drifts slows both alike. The median of these is robust where
    two means measured one after the other are not (a shared or throttled CPU)."""
    ratios = []
    for r in range(rounds):
        took = {}
        for name in (('new', 'base') if r % 2 == 0 else ('base', 'new')):
            fn = new if name == 'new' else base
            start = clock()
            for _ in range(calls):
                fn()
            took[name] = clock() - start
        ratios.append(took['base'] / max(took['new'], 1e-12))
    return ratios


def compare_builds(shape: Shape, batch: int, dtype, device, args) -> str:
    """--rounds: this checkout's cpu kernels and --cpu-baseline's alternated (forward, then
    forward + backward), as one line: the median ratio and its range, and whether the two
    builds' forward outputs are bit-identical."""
    clock = time.process_time if args.timer == 'process' else time.perf_counter
    new = make_calls(shape, batch, dtype, device, 'cpu', args)
    base = make_calls(shape, batch, dtype, device, BASELINE, args)
    out_new, out_base = new[0](), base[0]()
    if torch.equal(out_new, out_base):
        same = 'outputs bit-identical'
    else:
        diff = (out_new.double() - out_base.double()).abs().max().item()
        same = f'outputs differ by up to {diff:.3g}'
    parts = []
    for label, i in (('fwd', 0), ('fwd+bwd', 1)):
        for _ in range(args.warmup):
            new[i](), base[i]()
        ratios = interleaved_ratios(new[i], base[i], args.rounds, args.round_calls, clock)
        parts.append(f'{label} {statistics.median(ratios):.2f}x '
                     f'({min(ratios):.2f}-{max(ratios):.2f})')
    return (f'#   {shape.name}: cpu vs {BASELINE} interleaved, {args.rounds} rounds of '
            f'{args.round_calls} calls, median (range) of {BASELINE} time / cpu time: '
            + ', '.join(parts) + f'; {same}')


def format_row(cols: List[str], widths: List[int]) -> str:
    return '  '.join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                     enumerate(zip(cols, widths)))


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=None,
                        help='batch of every shape (default: 1 on CPU, the spec anchor '
                             'batch on CUDA: 128, 2 for the detection shape)')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default=None,
                        help='input dtype (default float32 on CPU, float16 on CUDA)')
    parser.add_argument('--shapes', nargs='+', choices=[s.name for s in SHAPES],
                        default=[s.name for s in SHAPES])
    parser.add_argument('--backends', nargs='+', choices=['torch', 'cpu', 'cuda'],
                        default=None, help='default: every available backend')
    parser.add_argument('--skip-torch-above', type=int, default=16384, metavar='L',
                        help="skip the (slow, python-loop) 'torch' backend for L above "
                             'this (default 16384)')
    parser.add_argument('--torch-reps', type=int, default=1,
                        help="timed calls of the 'torch' backend (no warm-up; default 1)")
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--min-reps', type=int, default=3)
    parser.add_argument('--max-reps', type=int, default=200)
    parser.add_argument('--budget', type=float, default=1.0,
                        help='seconds of timed calls per measurement (default 1.0)')
    parser.add_argument('--hbm-bandwidth', type=float, default=3.0e12,
                        help='floor bandwidth in B/s for the CUDA roofline (default '
                             '3.0e12, the H100 copy bandwidth of spec §4.3)')
    parser.add_argument('--measure-bandwidth', action='store_true',
                        help='CUDA: measure the device-to-device copy bandwidth first and '
                             'use it as the floor bandwidth instead of --hbm-bandwidth')
    parser.add_argument('--json', default=None, metavar='PATH',
                        help='also write the results (one record per shape and backend) '
                             'as JSON')
    parser.add_argument('--markdown', default=None, metavar='PATH',
                        help='also append the results as a markdown section to PATH')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads for the CPU backends')
    parser.add_argument('--cpu-baseline', default=None, metavar='SO',
                        help="another build of the CPU extension (a mmssm/_C*.so, e.g. of "
                             "an earlier commit) timed as backend 'cpu-baseline' in the same "
                             "run; prints the speed-up of this checkout's kernels over it")
    parser.add_argument('--rounds', type=int, default=0,
                        help='with --cpu-baseline: also alternate the two builds for this '
                             'many rounds per shape and print the median of the per-round '
                             'ratios (robust on a shared machine, where the two means of '
                             'the table, measured one after the other, are not)')
    parser.add_argument('--round-calls', type=int, default=10,
                        help='calls of each build per round of --rounds (default 10)')
    parser.add_argument('--heap', choices=['steady', 'default'], default='steady',
                        help="CPU: 'steady' keeps freed memory in glibc's heap between "
                             'calls (mmssm.apis.cpu_heap, as benchmark_backbone.py does), so '
                             'a call does not page-fault its outputs in afresh -- at the '
                             'detection shape (L = 64,000) that was half of the forward; '
                             "'default': glibc's own policy")
    parser.add_argument('--timer', choices=['wall', 'process'], default='wall',
                        help="'process': CPU time of this process instead of wall time; "
                             'with --threads 1 it measures the work alone on a shared, '
                             'busy machine (CPU only)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: no CUDA device is available '
                         f'(torch {torch.__version__}, torch.cuda.is_available() is False)')
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype or ('float16' if device.type == 'cuda' else 'float32')]
    if args.backends is None:
        wanted = ['torch', 'cuda' if device.type == 'cuda' else 'cpu']
    else:
        wanted = args.backends
    backends = []
    for backend in wanted:
        if backend == 'cuda' and device.type != 'cuda' or \
                backend == 'cpu' and device.type != 'cpu':
            print(f'# skipping backend {backend!r}: it does not run on {device}')
        elif not backend_available(backend):
            print(f'# skipping backend {backend!r}: not built / not available')
        else:
            backends.append(backend)
    if args.rounds and not args.cpu_baseline:
        raise SystemExit('--rounds alternates this checkout and --cpu-baseline: give both')
    if args.rounds < 0 or args.round_calls < 1:
        raise SystemExit('--rounds must be >= 0 and --round-calls >= 1')
    if args.cpu_baseline:
        if 'cpu' not in backends:
            raise SystemExit('--cpu-baseline compares against the cpu backend, which is '
                             'not being run')
        kernels._loaded[BASELINE] = load_extension(args.cpu_baseline)
        backends.append(BASELINE)
    on_cuda = device.type == 'cuda'
    if on_cuda and args.timer == 'process':
        raise SystemExit('--timer process is for CPU runs (GPU time is not process time)')
    itemsize = torch.empty((), dtype=dtype).element_size()
    dtype_name = str(dtype).replace('torch.', '')
    if on_cuda:
        where = f'{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}'
        if args.measure_bandwidth:
            args.hbm_bandwidth = measure_copy_bandwidth(device)
            floor_note = (f'floor bandwidth {args.hbm_bandwidth / 1e12:.2f} TB/s (measured '
                          'device-to-device copy, read + write)')
        else:
            floor_note = f'floor bandwidth {args.hbm_bandwidth / 1e12:.2f} TB/s (--hbm-bandwidth)'
    else:
        where = f'{torch.get_num_threads()} threads, {args.timer} time'
        if args.heap == 'steady' and steady_heap():
            where += ', glibc heap kept between calls'
        if 'cpu' in backends:
            from mmssm.ops.kernels import load_backend
            where += f', kernels for {load_backend("cpu").cpu_isa()}'
    title = (f'device {device} ({where}), dtype {dtype_name}, torch {torch.__version__}, '
             'D + delta_bias + softplus')
    print(f'# {title}' + (f'\n# {floor_note}' if on_cuda else ''))

    header = ['shape', 'B', 'Dk', 'L', 'N', 'G', 'z', 'backend', 'fwd ms', 'fwd+bwd ms',
              'fwd ns/upd', 'f+b ns/upd', 'fwd x', 'f+b x']
    if on_cuda:
        header += ['bwd ms', 'fwd GB/s', 'fwd xfloor', 'bwd GB/s', 'bwd xfloor']
    widths = [max(len(h), 8) for h in header]
    widths[0] = max(len(s) for s in args.shapes + ['shape'])
    print(format_row(header, widths))
    print(format_row(['-' * w for w in widths], widths))

    records, rows = [], []
    compared = []  # --rounds: the two builds alternated, one line per shape
    for shape in (s for s in SHAPES if s.name in args.shapes):
        batch = args.batch or (shape.gpu_batch if on_cuda else 1)
        results = {}
        for backend in backends:
            if backend == 'torch' and shape.seqlen > args.skip_torch_above:
                continue
            try:
                results[backend] = bench_backend(shape, batch, dtype, device, backend, args)
            except torch.cuda.OutOfMemoryError:
                results[backend] = None  # reported as OOM; the next backend / shape runs
                torch.cuda.empty_cache()
        fwd_bytes, bwd_bytes = bytes_moved(shape, batch, itemsize)
        ref = results.get('torch')
        updates = batch * shape.dim * shape.seqlen * shape.dstate
        for backend, times in results.items():
            record = dict(shape=shape.name, batch=batch, dim=shape.dim, seqlen=shape.seqlen,
                          dstate=shape.dstate, groups=shape.groups, z=shape.has_z,
                          backend=backend, dtype=dtype_name, fwd_bytes=fwd_bytes,
                          bwd_bytes=bwd_bytes, error='OOM' if times is None else None)
            row = [shape.name, str(batch), str(shape.dim), str(shape.seqlen),
                   str(shape.dstate), str(shape.groups), 'y' if shape.has_z else '-',
                   backend]
            if times is None:
                row += ['OOM'] + ['-'] * (len(header) - len(row) - 1)
            else:
                t_fwd, t_fb = times
                record.update(fwd_s=t_fwd, fwd_bwd_s=t_fb, fwd_ns_per_update=t_fwd * 1e9 / updates,
                              fwd_bwd_ns_per_update=t_fb * 1e9 / updates)
                row += [f'{t_fwd * 1e3:.3f}', f'{t_fb * 1e3:.3f}',
                        f'{t_fwd * 1e9 / updates:.3f}', f'{t_fb * 1e9 / updates:.3f}',
                        f'{ref[0] / t_fwd:.1f}' if ref else 'n/a',
                        f'{ref[1] / t_fb:.1f}' if ref else 'n/a']
                if on_cuda:
                    t_bwd = max(t_fb - t_fwd, 1e-9)
                    floor_fwd = fwd_bytes / args.hbm_bandwidth
                    floor_bwd = bwd_bytes / args.hbm_bandwidth
                    record.update(bwd_s=t_bwd, fwd_x_floor=t_fwd / floor_fwd,
                                  bwd_x_floor=t_bwd / floor_bwd)
                    row += [f'{t_bwd * 1e3:.3f}', f'{fwd_bytes / t_fwd / 1e9:.0f}',
                            f'{t_fwd / floor_fwd:.2f}', f'{bwd_bytes / t_bwd / 1e9:.0f}',
                            f'{t_bwd / floor_bwd:.2f}']
            records.append(record)
            rows.append(row)
            print(format_row(row, widths), flush=True)
        if results.get('cpu') and results.get(BASELINE):
            (nf, nb), (bf, bb) = results['cpu'], results[BASELINE]
            print(f'#   {shape.name}: cpu vs {BASELINE}: fwd {bf / nf:.2f}x, '
                  f'fwd+bwd {bb / nb:.2f}x faster', flush=True)
            if args.rounds:
                line = compare_builds(shape, batch, dtype, device, args)
                compared.append(line.lstrip('# '))
                print(line, flush=True)
    notes = ['ns/upd: time per state update (one step of one channel\'s recurrence for one '
             'of its N states; for N = 1 it includes the per-position softplus / exp / '
             'output work)','fwd x / f+b x: speed-up over the torch backend in this run (n/a: torch '
             'skipped, L > --skip-torch-above)']
    if on_cuda:
        notes.append('bwd = (fwd+bwd) - fwd; xfloor = measured time / (spec §4.3 bytes / '
                     f'{args.hbm_bandwidth:.3g} B/s): 1.00 is the HBM floor')
    for note in notes:
        print(f'# {note}')

    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(title=title, hbm_bandwidth=args.hbm_bandwidth if on_cuda else None,
                           results=records, builds_interleaved=compared), f, indent=1)
    if args.markdown:
        lines = [f'#### selective scan, {dtype_name}', '', title + '.' +
                 (f' {floor_note}.' if on_cuda else ''), '',
                 '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
        lines += [''] + notes + ['']
        if compared:  # (the table's cpu / cpu-baseline rows are timed one after the other)
            lines += ['The two builds alternated (--rounds), the figures to read:', '']
            lines += [f'* {line}' for line in compared] + ['']
        with open(args.markdown, 'a') as f:
            f.write('\n'.join(lines) + '\n')

if __name__ == '__main__':
    main()
