"""Model-only inference speed (images/s) of a config's model or of a bare backbone.

The input batch is built once (random, normalised), so data loading and
pre-processing are excluded; warm-up iterations are not timed; CUDA is synchronised
around every timed iteration.

    python tools/analysis_tools/benchmark.py configs/mask_rcnn_msvmamba_t_1x.py
    python tools/analysis_tools/benchmark.py CONFIG --checkpoint ckpt.pth --amp
    python tools/analysis_tools/benchmark.py --backbone VMamba --arch tiny_s1l8 --batch 64
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from mmssm.apis.analysis import (TASK_DEFAULT_SHAPES, build_backbone,  # noqa: E402
                                 build_task_model, count_params, dummy_batch,
                                 format_count, parse_arch, parse_shape,
                                 resolve_backend, scan_backend)
from mmssm.fileio import TRUST_HELP  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Model-only inference FPS (inputs built once; data loading excluded).')
    parser.add_argument('config', nargs='?', help='config file (or use --backbone)')
    parser.add_argument('--checkpoint', help='weights to load (optional; speed does not '
                        'depend on them except through detector post-processing)')
    parser.add_argument('--trust-pickle', action='store_true', help=TRUST_HELP)
    parser.add_argument('--backbone', help='benchmark a bare backbone: class or family '
                        'name (mmssm.VMamba, msvmamba, ...)')
    parser.add_argument('--arch', help='backbone preset name or dict literal')
    parser.add_argument('--backbone-cfg', nargs='+', action=DictAction, default={},
                        help='extra backbone kwargs, key=value')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config values, key=value')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input H W (one value: square); default 1280 800 (mmdet), '
                        '512 512 (mmseg), 224 224 (classifiers, backbones)')
    parser.add_argument('--batch', type=int, default=1, help='images per forward')
    parser.add_argument('--num-warmup', type=int, default=5, help='untimed iterations')
    parser.add_argument('--num-iters', type=int, default=20, help='timed iterations')
    parser.add_argument('--amp', action='store_true',
                        help='autocast (float16 on CUDA, bfloat16 on CPU)')
    parser.add_argument('--mode', default='predict', choices=['predict', 'tensor'],
                        help="task models: 'predict' (with post-processing, e.g. NMS) "
                        "or 'tensor' (raw head outputs)")
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda'")
    parser.add_argument('--scan-backend', default='auto',
                        choices=['auto', 'cpu', 'cuda', 'torch'],
                        help='selective-scan backend (auto: compiled if built)')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--out', help='also write the results to this JSON file')
    args = parser.parse_args(argv)
    if bool(args.config) == bool(args.backbone):
        parser.error('give a config file or --backbone NAME (not both)')
    for name in ('batch', 'num_iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.num_warmup < 0:
        parser.error('--num-warmup must be >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = args.device
    if device_name == 'auto':
        device_name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device_name.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is visible')
    device = torch.device(device_name)

    if args.backbone:
        model = build_backbone(args.backbone, parse_arch(args.arch), **args.backbone_cfg)
        scope, title = 'backbone', f'{type(model).__name__}(arch={args.arch or "default"})'
    else:
        model, _, scope = build_task_model(args.config, args.cfg_options)
        title = f'{type(model).__name__} from {args.config}'
    if args.checkpoint:
        from mmengine.runner import load_checkpoint

        from mmssm.apis import trust_checkpoints
        if args.trust_pickle:
            trust_checkpoints([args.checkpoint])
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model = model.to(device).eval()
    shape = parse_shape(args.shape, TASK_DEFAULT_SHAPES[scope])
    images, samples = dummy_batch(scope, shape, args.batch, device)
    backend = resolve_backend(args.scan_backend, device, check_available=True)
    amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            if samples is None:
                return model(images)
            return model(images, samples, mode=args.mode)

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    times = []
    with scan_backend(backend), torch.no_grad():
        for _ in range(args.num_warmup):
            step()
        sync()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.num_iters):
            sync()
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)

    mean = statistics.mean(times)
    result = dict(model=title, input_shape=list(images.shape), device=str(device),
                  amp=args.amp, scan_backend=backend, mode=args.mode if samples else None,
                  params=count_params(model), num_warmup=args.num_warmup,
                  num_iters=args.num_iters, latency_ms_mean=mean * 1e3,
                  latency_ms_median=statistics.median(times) * 1e3,
                  latency_ms_std=(statistics.stdev(times) * 1e3 if len(times) > 1 else 0.0),
                  fps=args.batch / mean,
                  threads=torch.get_num_threads() if device.type == 'cpu' else None)
    if device.type == 'cuda':
        result['peak_memory_mb'] = torch.cuda.max_memory_allocated(device) / 2**20
        result['tf32'] = torch.backends.cuda.matmul.allow_tf32
        result['gpu'] = torch.cuda.get_device_name(device)

    line = '=' * 60
    print(line)
    print(f'Model: {title}  ({format_count(result["params"])} params)')
    print(f'Input: {tuple(images.shape)} on {device}'
          f'{" (" + result["gpu"] + ")" if "gpu" in result else ""}, amp={args.amp}, '
          f'scan backend {backend}'
          + (f', {result["threads"]} threads' if result['threads'] else ''))
    print(f'Iterations: {args.num_warmup} warm-up + {args.num_iters} timed')
    print(f'Latency: {result["latency_ms_mean"]:.2f} ms/iter (median '
          f'{result["latency_ms_median"]:.2f}, std {result["latency_ms_std"]:.2f})')
    print(f'Throughput: {result["fps"]:.2f} images/s')
    if 'peak_memory_mb' in result:
        print(f'Peak memory: {result["peak_memory_mb"]:.0f} MiB, TF32 matmul: '
              f'{result["tf32"]}')
    print(line)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'results written to {args.out}')
    return result


if __name__ == '__main__':
    main()
