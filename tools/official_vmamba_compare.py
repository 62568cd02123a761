"""Official VMamba-T[s1l8] against mmssm's, on the same weights, in one run on one device.

The throughput anchor of issue 12 (paper: VMamba-T[s1l8] 1686 img/s inference, 571 img/s
training, 1x A100, batch 128, 224). It needs a copy of the official repository
(github.com/MzeroMiko/VMamba), which mmssm never commits: ``tools/device_check.sh --prepare
--official /path/to/VMamba`` copies its ``kernels/selective_scan`` and
``classification/models`` into ``.device/official/VMamba`` and builds wheels of fvcore and
the two packages it needs (``vmamba.py`` imports ``fvcore.nn`` at module level) into
``.device/official/wheels``; the device check's ``official`` step installs those and runs:

    python tools/official_vmamba_compare.py --official .device/official/VMamba --build

1. ``--build``: the official ``selective_scan_cuda_oflex`` extension, built in place by
   its own ``setup.py`` (sm of the visible GPU, MAX_JOBS = all cores), its sources
   unmodified; ``tools/official/cub_compat.cuh`` is force-included into its ``.cu`` files
   (``NVCC_APPEND_FLAGS``) because CUDA 13's CUB (CCCL 3) removed ``cub::LaneId`` and
   ``cub::CTA_SYNC``, which its backward kernel calls.
2. The official ``Backbone_VSSM`` with the MM_VSSM keyword arguments of
   ``vmambav2v_tiny_224.yaml`` (VMamba-T[s1l8]; ``--small``: the parity fixture's shrunk
   widths/depths), randomly initialised; mmssm's from the same state dict through
   ``mmssm.converters.from_official`` (strict load).
3. Parity: the stage outputs of both in fp32 (TF32 off) on one batch, as the max error
   relative to each output's range.
4. Timing: img/s and peak memory of both at 224: inference at ``--batch`` (AMP float16
   and fp32) and a training step (AMP: forward, sum of the outputs' means, backward) at
   ``--train-batch``; the median of ``--iters`` steps after ``--warmup``.

Writes a markdown section (``--markdown``) and every figure (``--json``); the exit status
is 1 when the parity check fails or a measurement errors.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / 'tools' / 'analysis_tools'):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import benchmark_backbone  # noqa: E402  (tools/analysis_tools: the same step and timer)

# MM_VSSM / Backbone_VSSM keyword arguments of VMamba-T[s1l8] (vmambav2v_tiny_224.yaml,
# as the official detection/segmentation configs pass them).
TINY_S1L8 = dict(
    out_indices=(0, 1, 2, 3), pretrained=None, norm_layer='ln2d', patch_size=4, in_chans=3,
    depths=[2, 2, 8, 2], dims=96, ssm_d_state=1, ssm_ratio=1.0, ssm_dt_rank='auto',
    ssm_act_layer='silu', ssm_conv=3, ssm_conv_bias=False, ssm_drop_rate=0.0, ssm_init='v0',
    forward_type='v05_noz', mlp_ratio=4.0, mlp_act_layer='gelu', mlp_drop_rate=0.0,
    gmlp=False, drop_path_rate=0.2, patch_norm=True, downsample_version='v3',
    patchembed_version='v2', use_checkpoint=False, posembed=False, imgsize=224)
# The parity fixture's shrink of the same layout (widths 16..128), for a quick check.
SMALL = dict(TINY_S1L8, depths=[1, 1, 2, 1], dims=16)
PARITY_RTOL = 1e-4


# Forced into the official .cu files: CUDA 13's CUB lacks two helpers they call.
CUB_COMPAT = ROOT / 'tools' / 'official' / 'cub_compat.cuh'


def build_official_kernel(official: Path) -> float:
    """Build selective_scan_cuda_oflex in place, its sources unmodified (nvcc reads
    NVCC_APPEND_FLAGS: tools/official/cub_compat.cuh is force-included); returns the
    seconds it took."""
    kernel_dir = official / 'kernels' / 'selective_scan'
    append = f'{os.environ.get("NVCC_APPEND_FLAGS", "")} -include {CUB_COMPAT}'.strip()
    env = dict(os.environ, MAX_JOBS=str(os.cpu_count() or 1), NVCC_APPEND_FLAGS=append)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, 'setup.py', 'build_ext', '--inplace'],
                          cwd=kernel_dir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise SystemExit(f'building the official selective_scan kernel failed:\n{tail}')
    return time.perf_counter() - start


def import_official(official: Path):
    """The official Backbone_VSSM class (classification/models/vmamba.py)."""
    for sub in ('kernels/selective_scan', 'classification/models'):
        path = str(official / sub)
        if not (official / sub).is_dir():
            raise SystemExit(f'{official / sub} not found: --official must be a copy of the '
                             'official VMamba repository (see --help)')
        if path not in sys.path:
            sys.path.insert(0, path)
    import vmamba  # noqa: E402  (the official module)
    return vmamba.Backbone_VSSM


@contextlib.contextmanager
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def outputs_of(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def parity(official_model, ours, x) -> list:
    """Max |ours - official| / max |official| per output, fp32 without TF32."""
    with torch.no_grad(), no_tf32():
        ref = outputs_of(official_model(x))
        got = outputs_of(ours(x))
    if len(ref) != len(got):
        raise SystemExit(f'official model returns {len(ref)} outputs, mmssm {len(got)}')
    errors = []
    for r, g in zip(ref, got):
        if r.shape != g.shape:
            raise SystemExit(f'output shapes differ: official {tuple(r.shape)}, '
                             f'mmssm {tuple(g.shape)}')
        errors.append(float((g.double() - r.double()).abs().max()
                            / r.double().abs().max().clamp_min(1e-12)))
    return errors


def measure(model, x, mode: str, amp: bool, warmup: int, iters: int):
    """(img/s, peak MiB) of one model: benchmark_backbone.py's step and measurement, so
    both tools time the same thing (median of ``iters`` steps; CUDA peak over them)."""
    step = benchmark_backbone.make_step(model, x, mode, torch.float16 if amp else None)
    img_per_s, _, peak = benchmark_backbone.measure(step, x.device, x.shape[0], warmup, iters)
    return img_per_s, peak


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--official', type=Path, required=True,
                        help='copy of the official VMamba repository (kernels/selective_scan '
                             'and classification/models at least)')
    parser.add_argument('--build', action='store_true',
                        help='build the official selective_scan_cuda_oflex kernel first')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--small', action='store_true',
                        help="the parity fixture's shrunk model instead of VMamba-T[s1l8]")
    parser.add_argument('--batch', type=int, default=128, help='inference batch (paper: 128)')
    parser.add_argument('--train-batch', type=int, default=128,
                        help='training-step batch (paper: 128)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--json', type=Path, default=None)
    parser.add_argument('--markdown', type=Path, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: no CUDA device is available')
    build_s = build_official_kernel(args.official) if args.build else None
    Backbone_VSSM = import_official(args.official)
    from mmssm.converters import from_official

    config = SMALL if args.small else TINY_S1L8
    torch.manual_seed(0)
    official_model = Backbone_VSSM(**config).eval()
    ours = from_official('vmamba', config, official_model.state_dict())
    official_model, ours = official_model.to(device), ours.to(device)
    torch.manual_seed(1)
    errors = parity(official_model, ours, torch.randn(2, 3, 224, 224, device=device))
    parity_ok = max(errors) <= PARITY_RTOL

    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    rows, failed = [], not parity_ok
    for mode, amp, batch in (('infer', True, args.batch), ('infer', False, args.batch),
                             ('train', True, args.train_batch)):
        x = torch.randn(batch, 3, 224, 224, device=device)
        row = dict(mode=mode, precision='amp' if amp else 'fp32', batch=batch)
        for name, model in (('official', official_model), ('mmssm', ours)):
            try:
                row[f'{name}_img_per_s'], row[f'{name}_peak_mb'] = measure(
                    model, x, mode, amp, args.warmup, args.iters)
            except Exception as err:  # noqa: BLE001 - report the cell, go on
                row[f'{name}_error'] = f'{type(err).__name__}: {str(err).splitlines()[0][:80]}'
                failed = True
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)

    name = 'VMamba-T[s1l8]' if not args.small else 'VMamba (fixture-size)'
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    lines = [f'{name}, {where}, official kernel build '
             + (f'{build_s:.0f} s' if build_s is not None else 'not run') + '.', '',
             'Parity (fp32, TF32 off, max error / output range, per stage): '
             + ', '.join(f'{e:.1e}' for e in errors)
             + (' - ok' if parity_ok else f' - FAIL (> {PARITY_RTOL:g})'), '',
             '| mode | precision | batch | official img/s | mmssm img/s | mmssm / official '
             '| official peak MiB | mmssm peak MiB |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        o, m = r.get('official_img_per_s'), r.get('mmssm_img_per_s')
        ratio = f'{m / o:.2f}x' if o and m else '-'

        def cell(key, fmt):
            value = r.get(key)
            return '-' if value is None else fmt.format(value)
        lines.append(f'| {r["mode"]} | {r["precision"]} | {r["batch"]} | '
                     f'{r.get("official_error") or cell("official_img_per_s", "{:.1f}")} | '
                     f'{r.get("mmssm_error") or cell("mmssm_img_per_s", "{:.1f}")} | {ratio} | '
                     f'{cell("official_peak_mb", "{:.0f}")} | {cell("mmssm_peak_mb", "{:.0f}")} |')
    lines += ['', 'Paper anchor (1x A100, batch 128, 224): 1686 img/s inference, 571 img/s '
              'training; not comparable 1:1 with another GPU.', '']
    text = '\n'.join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(dict(model=name, device=where, build_s=build_s,
                                             parity_errors=errors, parity_ok=parity_ok,
                                             results=rows), indent=1))
    if failed:
        raise SystemExit(1)


if __name__ == '__main__':
    main()
