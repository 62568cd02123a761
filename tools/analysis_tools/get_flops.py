r"""Parameters and FLOPs of a config's model or of a bare mmssm backbone, with the
selective scan counted.

    python tools/analysis_tools/get_flops.py configs/mask_rcnn_msvmamba_t_1x.py
    python tools/analysis_tools/get_flops.py CONFIG --shape 512 2048
    python tools/analysis_tools/get_flops.py --backbone mmssm.VMamba --arch tiny_s1l8
    python tools/analysis_tools/get_flops.py --backbone msvmamba \
        --arch "{'dims': 32, 'depths': (1, 1, 2, 1)}" --shape 512 512
"""
import argparse
import os.path as osp
import sys
import textwrap

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from mmssm.apis.analysis import (SCAN_FORMULA, TASK_DEFAULT_SHAPES, bound_forward,  # noqa: E402
                                 build_backbone, build_task_model, config_input_shape,
                                 count_flops, count_params, dummy_batch, format_count,
                                 parse_arch, parse_shape)

DESCRIPTION = f"""\
Count parameters and FLOPs (fvcore rules via mmengine's FlopAnalyzer: one
multiply-add = one FLOP, element-wise ops free) of a model built from a config, or of
a bare backbone. The selective scan, invisible to plain fvcore/mmengine counting (an
opaque prim::PythonOp), is counted per call as

    {SCAN_FORMULA}

for u (B, D, L) and A (D, N) -- the count of state-spaces/mamba#110 used by VMamba,
MSVMamba and EfficientVMamba for their published FLOPs. With every scan backend the
scan is one traced node, counted exactly once (the 'torch' reference loop is wrapped).
Detectors/segmentors are traced like mmdet/mmseg's get_flops: forward(mode='tensor')
(detectors: backbone + neck + heads on the RPN proposals; segmentors: backbone + decode
head) on one random image of --shape; weights are random (FLOPs do not depend on them,
except through the number of RPN proposals of two-stage detectors)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='config file (or use --backbone)')
    parser.add_argument('--backbone', help='count a bare backbone instead of a config: '
                        "class or family name, e.g. mmssm.VMamba, MSVMamba, vim")
    parser.add_argument('--arch', help="backbone preset name or a dict literal, e.g. "
                        "tiny_s1l8 or \"{'dims': 32, 'depths': (1, 1, 2, 1)}\"")
    parser.add_argument('--backbone-cfg', nargs='+', action=DictAction, default={},
                        help='extra backbone kwargs, key=value (e.g. out_indices=(3,))')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input H W (one value: square); default 1280 800 for mmdet, '
                        '512 512 for mmseg, the center crop of the test pipeline for '
                        'classifiers, 224 224 for backbones')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the input')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config values, key=value')
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'auto'")
    parser.add_argument('--scan-backend', default='auto',
                        choices=['auto', 'cpu', 'cuda', 'torch'],
                        help="selective-scan backend while tracing (auto: compiled if built)")
    parser.add_argument('--no-scan-count', action='store_true',
                        help='do not count the scan (plain mmengine/fvcore numbers)')
    parser.add_argument('--show-table', action='store_true',
                        help='print the per-module table')
    parser.add_argument('--max-depth', type=int, default=3, help='table depth')
    args = parser.parse_args(argv)
    if bool(args.config) == bool(args.backbone):
        parser.error('give a config file or --backbone NAME (not both)')
    if args.batch < 1:
        parser.error('--batch must be >= 1')
    return args


def resolve_device(name: str) -> torch.device:
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is visible')
    return torch.device(name)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.backbone:
        model = build_backbone(args.backbone, parse_arch(args.arch), **args.backbone_cfg)
        scope, title = 'backbone', f'{type(model).__name__}(arch={args.arch or "default"})'
        backbone = model
        default_shape = TASK_DEFAULT_SHAPES[scope]
    else:
        model, cfg, scope = build_task_model(args.config, args.cfg_options)
        title = f'{type(model).__name__} from {args.config}'
        backbone = getattr(model, 'backbone', None)
        default_shape = config_input_shape(cfg, scope)
    model = model.to(device).eval()
    shape = parse_shape(args.shape, default_shape)
    images, samples = dummy_batch(scope, shape, args.batch, device)
    forward_kwargs = {} if samples is None else dict(data_samples=samples, mode='tensor')
    with bound_forward(model, **forward_kwargs):
        result = count_flops(model, images, count_scan=not args.no_scan_count,
                             backend=args.scan_backend)
    params = count_params(model)

    line = '=' * 60
    print(line)
    print(f'Model: {title}')
    print(f'Input shape: {tuple(images.shape)}')
    print(f'Flops: {format_count(result["flops"])}  ({result["flops"]:,})')
    if args.no_scan_count:
        print('  selective scan: NOT counted (--no-scan-count)')
    else:
        print(f'  selective scan: {format_count(result["scan_flops"])} in '
              f'{result["scan_calls"]} calls, {SCAN_FORMULA}')
    by_op = ', '.join(f'{k} {format_count(v)}' for k, v in
                      sorted(result['by_operator'].items(), key=lambda kv: -kv[1]))
    print(textwrap.fill(f'  by operator: {by_op}', width=100, subsequent_indent='    '))
    print(f'Params: {format_count(params)}  ({params:,})')
    if backbone is not None and backbone is not model:
        bb_params = count_params(backbone)
        bb_flops = result['analyzer'].total('backbone')
        print(f'  backbone: {format_count(bb_params)} params, '
              f'{format_count(bb_flops)} FLOPs')
    print(f'Scan backend while tracing: {result["backend"]}')
    print(line)
    if args.show_table:
        from mmengine.analysis import complexity_stats_table
        print(complexity_stats_table(flops=result['analyzer'], max_depth=args.max_depth,
                                     show_param_shapes=False))
    print('Note: FLOPs follow fvcore conventions (multiply-add = 1). Check that they are '
          'comparable to the numbers you compare with (input shape, heads included).')
    return result, params


if __name__ == '__main__':
    main()
