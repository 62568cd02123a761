"""Benchmark exported ONNX files against PyTorch on the CPU, measured in the same run.

For every model (``family`` or ``family:preset``: the backbone) and input size it times

* ``torch``: the PyTorch model in inference (``eval``, ``torch.inference_mode``) with
  mmssm's C++ selective-scan kernel (``mmssm._C``);
* ``onnxruntime`` (and ``openvino`` with ``--runtimes``): the file that
  :func:`mmssm.deployment.export_onnx` writes for it (standard operators only: the
  selective scan and the scan-pattern gather/merge lowered, docs/kernels.md);

* ``onnxruntime+op`` (with ``--custom-op``): the file exported with
  ``scan_op='custom'``, each scan one ``mmssm.SelectiveScan`` node that ONNX Runtime
  runs with mmssm's C++ kernel (``mmssm._ort_ops``, docs/deployment.md);

each with ``--threads`` intra-op threads (torch ``set_num_threads``, ONNX Runtime
``intra_op_num_threads`` with all graph optimisations and sequential execution, OpenVINO
``INFERENCE_NUM_THREADS``), and prints the median latency and the ratio runtime / torch.
The runs are interleaved (torch, runtime, torch, runtime, ...), so a machine busy with
other work slows every path alike; only the ratios are meant to be compared between runs.
ONNX Runtime's idle threads sleep instead of spinning (``spinning=False``): spinning,
its default, they took the cores from the next PyTorch run (measured on the 2-core
development VM: MobileMamba-T2 at 224 took 84 ms in PyTorch between ONNX Runtime runs
against 33 ms alone), which inflated the PyTorch column; sleeping, ONNX Runtime itself
was no slower.

``--scan`` adds rows for the selective scan alone, at the shape of the model's first (for
the hierarchical families: largest) scan call at that size, recorded from a PyTorch
forward: the C++ kernel against the lowering exported on its own.

``--check`` also prints each file's max relative error against PyTorch (the measure of
docs/deployment.md) on the benchmark input.

Examples::

    # the table of docs/deployment.md: every family, 224 and 512, batch 1, 2 threads
    python tools/analysis_tools/benchmark_deploy.py --sizes 224 512 --threads 2 --scan
    # one model, a detection-size input, both runtimes, errors too
    python tools/analysis_tools/benchmark_deploy.py --models vmamba --sizes 800x1333 \\
        --runtimes onnxruntime openvino --check
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_backbone import build_model, expand_models, parse_size  # noqa: E402

from mmssm import families  # noqa: E402
from mmssm.deployment import RUNTIMES, RuntimeSession, compare_outputs, export_onnx  # noqa: E402
from mmssm.models.layers import SelectiveScanRoutes  # noqa: E402
from mmssm.ops import kernels, selective_scan  # noqa: E402


@dataclass
class Row:
    model: str
    size: str
    part: str  # 'model' or 'scan'
    runtime: str
    torch_ms: Optional[float] = None
    runtime_ms: Optional[float] = None
    ratio: Optional[float] = None  # runtime / torch (medians)
    max_rel: Optional[float] = None
    shape: str = ''
    error: Optional[str] = None


# ---------------------------------------------------------------------------------------
# the scan alone
# ---------------------------------------------------------------------------------------
class ScanCall(nn.Module):
    """One recorded ``selective_scan`` call: the weights (A, D, delta_bias) kept, the
    activations (u, delta, B, C[, z]) as forward arguments."""

    def __init__(self, A, D, delta_bias, delta_softplus: bool):
        super().__init__()
        self.register_buffer('A', A.detach().clone())
        self.register_buffer('D', None if D is None else D.detach().clone())
        self.register_buffer('delta_bias',
                             None if delta_bias is None else delta_bias.detach().clone())
        self.delta_softplus = delta_softplus

    def forward(self, u, delta, B, C, z=None):
        return selective_scan(u, delta, self.A, B, C, self.D, z, self.delta_bias,
                              self.delta_softplus)


def record_first_scan(model: nn.Module, x: torch.Tensor):
    """(ScanCall, activations) of the first compiled-kernel scan ``model(x)`` makes. A
    scan with a low-rank delta (``selective_scan_lowrank`` on the CPU kernel) is recorded
    with its delta formed, as the standard scan the exported file computes; the routed
    CPU kernel (gather + scan + merge in one call, SS2D / MSVMamba inference) is turned
    off for the recording, so the scan is recorded as that standard call."""
    calls = []
    original = kernels.selective_scan_kernel
    original_lowrank = kernels.lowrank_forward

    def record(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        if not calls:
            acts = [t.detach().clone() for t in (u, delta, B, C)]
            if z is not None:
                acts.append(z.detach().clone())
            calls.append((ScanCall(A, D, delta_bias, delta_softplus), acts))

    def spy(backend, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
            return_last_state):
        record(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return original(backend, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                        return_last_state)

    def lowrank_spy(u, low, weight, A, B, C, D, z, delta_bias, delta_softplus):
        # (the kernel call of selective_scan_lowrank, with or without autograd)
        delta = kernels.grouped_lowrank_delta(low, weight.to(u.dtype))
        record(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return original_lowrank(u, low, weight, A, B, C, D, z, delta_bias, delta_softplus)

    routed = SelectiveScanRoutes.routed_kernel_applies
    kernels.selective_scan_kernel = spy
    kernels.lowrank_forward = lowrank_spy
    SelectiveScanRoutes.routed_kernel_applies = lambda self, x: False
    try:
        with torch.inference_mode():
            model(x)
    finally:
        kernels.selective_scan_kernel = original
        kernels.lowrank_forward = original_lowrank
        SelectiveScanRoutes.routed_kernel_applies = routed
    if not calls:
        raise RuntimeError('the model made no compiled selective-scan call')
    return calls[0]


def export_scan(call: ScanCall, acts: Sequence[torch.Tensor], path: str) -> None:
    names = ['u', 'delta', 'B', 'C', 'z'][:len(acts)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(call, tuple(acts), path, dynamo=False, opset_version=17,
                          input_names=names, output_names=['out'])


class OrtMulti:
    """A multi-input file in ONNX Runtime / OpenVINO (the scan rows)."""

    def __init__(self, path: str, runtime: str, threads: int):
        self.session = RuntimeSession(path, runtime, threads=threads, spinning=False)

    def __call__(self, arrays: Sequence[np.ndarray]):
        s = self.session
        if s.runtime == 'onnxruntime':
            names = [i.name for i in s._session.get_inputs()]
            return s._session.run(None, dict(zip(names, arrays)))
        compiled, request = s._compiled_for(tuple(s.input_shape))  # a static file
        result = request.infer({i: a for i, a in enumerate(arrays)})
        return [np.asarray(result[out]) for out in compiled.outputs]


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def interleaved(fns: Dict[str, Callable[[], None]], warmup: int, repeat: int,
                budget_s: float) -> Dict[str, float]:
    """Median seconds of each function, the functions called in turn ``repeat`` times
    (fewer when a round exceeds the time budget, at least 3) after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for i in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: statistics.median(v) for name, v in times.items()}


def _fmt_size(size: Tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


def _max_rel(reference, outputs) -> float:
    return max(r['max_rel'] for r in compare_outputs(reference, outputs))


def bench_model(family: str, preset: str, size: Tuple[int, int], args,
                work_dir: str) -> List[Row]:
    name = f'{family}:{preset}'
    rows: List[Row] = []
    torch.manual_seed(0)
    model = build_model(family, preset, size).eval()
    x = torch.randn(args.batch, 3, *size)
    path = osp.join(work_dir, f'{family}_{preset}_{_fmt_size(size)}.onnx')
    export_onnx(model, x, path)
    with torch.inference_mode():
        reference = model(x)
    reference = reference if isinstance(reference, (list, tuple)) else [reference]
    x_np = x.numpy()

    def run_torch():
        with torch.inference_mode():
            model(x)

    scan = record_first_scan(model, x) if args.scan else None
    if scan is not None:
        call, acts = scan
        scan_path = path[:-5] + '_scan.onnx'
        export_scan(call, acts, scan_path)
        acts_np = [a.numpy() for a in acts]
        scan_shape = (f'u{tuple(acts[0].shape)} N={call.A.shape[1]} '
                      f'G={acts[2].shape[1]}' + (' z' if len(acts) > 4 else ''))

        def run_scan_torch():
            with torch.inference_mode():
                call(*acts)

    runs = [(runtime, path) for runtime in args.runtimes]
    if args.custom_op:
        op_path = path[:-5] + '_op.onnx'
        export_onnx(model, x, op_path, scan_op='custom')
        runs.insert(1, ('onnxruntime+op', op_path))
    for runtime, file in runs:
        session = RuntimeSession(file, runtime.split('+')[0], threads=args.threads,
                                 spinning=False)
        medians = interleaved({'torch': run_torch, 'rt': lambda: session(x_np)},
                              args.warmup, args.repeat, args.budget)
        row = Row(name, _fmt_size(size), 'model', runtime, medians['torch'] * 1e3,
                  medians['rt'] * 1e3, medians['rt'] / medians['torch'],
                  shape=str(tuple(x.shape)))
        if args.check:
            row.max_rel = _max_rel(reference, session(x_np))
        rows.append(row)
        if scan is not None and runtime in RUNTIMES:
            multi = OrtMulti(scan_path, runtime, args.threads)
            medians = interleaved({'torch': run_scan_torch, 'rt': lambda: multi(acts_np)},
                                  args.warmup, args.repeat, args.budget)
            row = Row(name, _fmt_size(size), 'scan', runtime, medians['torch'] * 1e3,
                      medians['rt'] * 1e3, medians['rt'] / medians['torch'],
                      shape=scan_shape)
            if args.check:
                with torch.inference_mode():
                    row.max_rel = _max_rel([call(*acts)], multi(acts_np))
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def _fmt(value: Optional[float], digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown_table(rows: Sequence[Row], check: bool) -> str:
    head = '| model | size | part | runtime | torch ms | runtime ms | runtime / torch |'
    rule = '|---|---|---|---|---:|---:|---:|'
    if check:
        head += ' max rel err |'
        rule += '---:|'
    lines = [head, rule]
    for r in rows:
        if r.error:
            lines.append(f'| {r.model} | {r.size} | {r.part} | {r.runtime} | error: '
                         f'{r.error} |')
            continue
        line = (f'| {r.model} | {r.size} | {r.part} | {r.runtime} | {_fmt(r.torch_ms)} | '
                f'{_fmt(r.runtime_ms)} | {_fmt(r.ratio, 2)} |')
        if check:
            line += f' {r.max_rel:.1e} |' if r.max_rel is not None else ' - |'
        lines.append(line)
    return '\n'.join(lines)


def describe_environment(threads: int) -> List[str]:
    import onnxruntime
    lines = [f'torch {torch.__version__}, onnxruntime {onnxruntime.__version__}',
             f'threads: {threads} (machine: {os.cpu_count()} logical CPUs, load average '
             f'{", ".join(f"{v:.1f}" for v in os.getloadavg())})']
    with contextlib.suppress(ImportError):
        import openvino
        lines[0] += f', openvino {openvino.__version__}'
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='ONNX Runtime / OpenVINO vs PyTorch (C++ scan kernel) latency on CPU',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--models', nargs='+', default=list(families.names()),
                        help="'family' (its smallest preset) or 'family:preset'")
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[(224, 224), (512, 512)], help='N or HxW')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2,
                        help='intra-op threads of every path (default 2)')
    parser.add_argument('--runtimes', nargs='+', choices=RUNTIMES, default=['onnxruntime'])
    parser.add_argument('--custom-op', action='store_true',
                        help="also ONNX Runtime running the file exported with "
                        "scan_op='custom' (mmssm's operator library)")
    parser.add_argument('--scan', action='store_true', help='also the scan alone')
    parser.add_argument('--check', action='store_true', help='also the max relative error')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeat', type=int, default=15, help='timed rounds (at least 3)')
    parser.add_argument('--budget', type=float, default=60.0,
                        help='seconds of timed rounds per row before stopping early')
    parser.add_argument('--work-dir', default=None, help='keep the exported files here')
    parser.add_argument('--json', type=Path, default=None, help='also write results here')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads < 1 or args.batch < 1 or args.repeat < 3:
        raise SystemExit('--threads and --batch must be >= 1, --repeat >= 3')
    if not kernels.backend_available('cpu'):
        raise SystemExit('mmssm._C (the C++ scan kernel) is not built: run '
                         'python setup.py build_ext --inplace')
    torch.set_num_threads(args.threads)
    models = expand_models(args.models)
    rows: List[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or tmp
        os.makedirs(work_dir, exist_ok=True)
        for family, preset in models:
            for size in args.sizes:
                try:
                    new = bench_model(family, preset, size, args, work_dir)
                except Exception as err:  # noqa: BLE001 - reported in the table
                    new = [Row(f'{family}:{preset}', _fmt_size(size), 'model', '-',
                               error=f'{type(err).__name__}: {str(err)[:200]}')]
                for row in new:
                    print(markdown_table([row], args.check).splitlines()[-1], flush=True)
                rows += new
    print()
    print('\n'.join(describe_environment(args.threads)))
    print(markdown_table(rows, args.check))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 1 if any(r.error for r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
