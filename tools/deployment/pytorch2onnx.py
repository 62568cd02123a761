"""Export an mmssm / OpenMMLab config's model to ONNX (see docs/deployment.md).

    python tools/deployment/pytorch2onnx.py configs/upernet_vmamba_t_160k_ade20k.py \\
        --checkpoint upernet.pth --shape 512 512 --dynamic --out upernet.onnx --verify

The graph takes the data preprocessor's output (normalised float32 (B, 3, H, W)) and
returns the tensors of ``model(inputs, mode='tensor')`` flattened in order; for two-stage
and cascade detectors it returns the backbone + neck features (the RoI heads run in
PyTorch through tools/deployment/onnx_infer.py). ``--verify`` runs the file next to
PyTorch and exits with status 1 if any output's max relative error exceeds
``--tolerance``.
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a model to ONNX.')
    parser.add_argument('config', help='config file')
    parser.add_argument('--checkpoint', help='checkpoint (mmengine/mmssm format); it must '
                        'fit the config exactly. Without it the weights are random.')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H W (one value: square); default: the config\'s crop '
                        'or 512 x 512 for detectors, 224 x 224 for classifiers')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the example')
    parser.add_argument('--dynamic', action='store_true',
                        help='batch, height and width as dynamic axes')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 17)')
    parser.add_argument('--part', choices=['tensor', 'features'], default=None,
                        help="what to export: 'tensor' (model(inputs, mode='tensor')) or "
                        "'features' (backbone + neck); default by model type")
    parser.add_argument('--scan-op', choices=['standard', 'custom'], default='standard',
                        help="'standard' (default): the selective scans as standard ONNX "
                        "operators, for every runtime; 'custom': each scan one "
                        'mmssm.SelectiveScan node, run by ONNX Runtime with mmssm\'s '
                        'operator library (faster on CPU; ONNX Runtime only)')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--verify', action='store_true',
                        help='compare the file with PyTorch (ONNX Runtime, CPU)')
    parser.add_argument('--verify-shape', type=int, nargs='+', default=None,
                        help='with --dynamic: a second input size H W to verify at '
                        '(default: about 3/4 of --shape)')
    parser.add_argument('--runtime', nargs='+', default=['onnxruntime'],
                        choices=['onnxruntime', 'openvino'], help='runtimes for --verify')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='max relative error allowed per output (--verify)')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='unpickle the checkpoint fully (only for files you trust)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config values, key=value')
    parser.add_argument('--debug', action='store_true', help='show full tracebacks')
    return parser.parse_args(argv)


def default_shape(cfg, kind: str):
    """The config's crop size for segmentors, 224 for classifiers, 512 otherwise."""
    if kind == 'segmentor':
        size = cfg.get('crop_size') or cfg.model.get('data_preprocessor', {}).get('size')
        if size:
            return tuple(int(s) for s in size)
    if kind == 'classifier':
        return (224, 224)
    return (512, 512)


def second_shape(shape, multiple: int = 32):
    """A second size for a --dynamic check: about 3/4 of each side, a multiple of 32."""
    return tuple(max(multiple, (3 * s // 4) // multiple * multiple) for s in shape)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmssm.deployment import (ExportError, export_onnx, format_rows, verify_onnx)
    from mmssm.deployment.onnx_export import parse_input_shape
    from mmssm.deployment.tasks import build_model, task_kind
    try:
        model, cfg, scope = build_model(args.config, args.checkpoint, args.cfg_options,
                                        args.trust_pickle)
        kind = task_kind(model)
        shape = parse_input_shape(args.shape) if args.shape else default_shape(cfg, kind)
        if args.batch < 1:
            raise ValueError(f'--batch must be >= 1, got {args.batch}')
        inputs = torch.randn(args.batch, 3, *shape, generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        info = export_onnx(model, inputs, args.out, dynamic=args.dynamic, opset=args.opset,
                           part=args.part, scan_op=args.scan_op,
                           metadata=dict(config=osp.abspath(args.config), scope=scope,
                                         checkpoint=args.checkpoint, task=kind))
    except (ExportError, ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        if args.debug:
            raise
        print(f'pytorch2onnx: error: {err}', file=sys.stderr)
        return 2
    print(f'wrote {args.out} in {time.perf_counter() - t0:.1f}s: part {info["part"]!r} of '
          f'{info["model_type"]}, input {tuple(inputs.shape)}'
          f'{" (dynamic batch/H/W)" if args.dynamic else ""}, '
          f'{len(info["output_names"])} outputs, opset {args.opset}'
          f'{", scans as mmssm.SelectiveScan nodes" if info["scan_op"] == "custom" else ""}')
    if not args.verify:
        return 0
    batches = [inputs]
    if args.dynamic:
        other = parse_input_shape(args.verify_shape) if args.verify_shape else second_shape(shape)
        batches.append(torch.randn(args.batch, 3, *other,
                                   generator=torch.Generator().manual_seed(1)))
    rows = []
    for runtime in args.runtime:
        try:
            rows += verify_onnx(model, args.out, batches, runtime=runtime,
                                part=info['part'], tolerance=args.tolerance)
        except RuntimeError as err:
            print(f'pytorch2onnx: {runtime}: {err}', file=sys.stderr)
            return 2
    print(format_rows(rows))
    bad = [r for r in rows if not r['ok']]
    if bad:
        print(f'pytorch2onnx: {len(bad)} output(s) above the tolerance {args.tolerance:g}',
              file=sys.stderr)
        return 1
    print(f'all outputs within max relative error {args.tolerance:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
