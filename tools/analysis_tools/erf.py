r"""Effective receptive field (ERF) of a backbone stage, as a log-scaled heatmap PNG.

As in the RepLKNet / VMamba papers: for each input image the gradient of the central
pixel of a stage's output (sum over channels of its ReLU) w.r.t. the input image is
taken, its positive part summed over the colour channels and averaged over images;
the map is shown on a log scale (max-normalised, --decades orders of magnitude).
The printed "area ratio @ t" is the area (fraction of the input) of the smallest
centred square holding a fraction t of the total contribution.

    python tools/analysis_tools/erf.py --backbone vmamba --arch tiny_s1l8 \
        --checkpoint vssm1_tiny_0230s_ckpt_epoch_264.pth --images data/imagenet/val_subset
    python tools/analysis_tools/erf.py --backbone msvmamba --arch nano --stage 2 --out erf.png
    python tools/analysis_tools/erf.py configs/demo/mask_rcnn_msvmamba_demo.py \
        --checkpoint work_dirs/demo/iter_300.pth --images data/demo/coco/val --shape 120 160
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from mmssm.apis.analysis import (build_backbone, effective_receptive_field,  # noqa: E402
                                 high_contribution_area, load_images, log_scaled,
                                 parse_arch, parse_shape)
from mmssm.fileio import TRUST_HELP  # noqa: E402

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Effective receptive field of a backbone stage -> heatmap PNG.')
    parser.add_argument('config', nargs='?',
                        help='config whose model.backbone to use (or use --backbone)')
    parser.add_argument('--backbone', '--family', dest='backbone',
                        help='backbone class or family name (vmamba, msvmamba, '
                        'efficientvmamba, mobilemamba, vim)')
    parser.add_argument('--arch', help='backbone preset name or dict literal')
    parser.add_argument('--backbone-cfg', nargs='+', action=DictAction, default={},
                        help='extra backbone kwargs, key=value')
    parser.add_argument('--checkpoint', help='official or mmssm backbone checkpoint, or a '
                        "detector/segmentor checkpoint (its 'backbone.' part is used); "
                        'without it the weights are random')
    parser.add_argument('--trust-pickle', action='store_true', help=TRUST_HELP)
    parser.add_argument('--stage', type=int, default=-1,
                        help='stage (out_indices entry) whose central output pixel is used '
                        "(-1: the last of the backbone's default outputs)")
    parser.add_argument('--images', help='folder of images to average over (default: '
                        'random normal images)')
    parser.add_argument('--num-images', type=int, default=8, help='images to average')
    parser.add_argument('--shape', type=int, nargs='+', default=[512],
                        help='input H W (one value: square), default 512')
    parser.add_argument('--decades', type=float, default=3.0,
                        help='orders of magnitude shown by the log scale')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda'")
    parser.add_argument('--seed', type=int, default=0, help='seed of the random images')
    parser.add_argument('--out', default='erf.png', help='output PNG')
    parser.add_argument('--save-npy', action='store_true',
                        help='also save the raw contribution map next to the PNG (.npy)')
    args = parser.parse_args(argv)
    if bool(args.config) == bool(args.backbone):
        parser.error('give a config file or --backbone NAME (not both)')
    if args.num_images < 1:
        parser.error('--num-images must be >= 1')
    return args


def build(args):
    """(backbone, stage, position of that stage among the backbone's outputs)."""
    if args.backbone:
        name, arch, kwargs = args.backbone, parse_arch(args.arch), dict(args.backbone_cfg)
    else:
        from mmssm.apis import load_config
        cfg = load_config(args.config)
        backbone_cfg = dict(cfg.model.backbone)
        backbone_cfg.pop('init_cfg', None)
        name, arch = backbone_cfg.pop('type'), backbone_cfg.pop('arch', None)
        kwargs = {**backbone_cfg, **args.backbone_cfg}
        if args.arch:
            arch = parse_arch(args.arch)
    backbone = build_backbone(name, arch, **kwargs)
    # default: the last stage the backbone returns; keep its own outputs when they
    # include the stage (then a checkpoint's output norms all load)
    stage = args.stage if args.stage >= 0 else max(backbone.out_indices)
    if stage not in backbone.out_indices:
        kwargs['out_indices'] = (stage, )  # the backbone validates the index
        backbone = build_backbone(name, arch, **kwargs)
    if args.checkpoint:
        # non-strict: an ImageNet checkpoint has no output norms of a dense backbone
        # (they stay at their identity init) and a classifier it does not use; the
        # differences are logged
        backbone.load_pretrained(args.checkpoint, trust_pickle=args.trust_pickle,
                                 strict=False)
    return backbone, stage, list(backbone.out_indices).index(stage)


def save_heatmap(heat: np.ndarray, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    height, width = heat.shape
    fig, ax = plt.subplots(figsize=(5.5, 5.5 * height / width + 0.6), dpi=120)
    image = ax.imshow(heat, cmap='RdYlGn', vmin=0.0, vmax=1.0, interpolation='nearest')
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='log-scaled contribution')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    device_name = args.device
    if device_name == 'auto':
        device_name = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device_name)
    shape = parse_shape(args.shape, (512, 512))
    backbone, stage, position = build(args)
    backbone = backbone.to(device)
    if args.images:
        images = load_images(args.images, shape, args.num_images)
        source = f'{images.shape[0]} images of {args.images}'
    else:
        generator = torch.Generator().manual_seed(args.seed)
        images = torch.randn(args.num_images, 3, *shape, generator=generator)
        source = f'{args.num_images} random images'
    erf = effective_receptive_field(backbone, images.to(device), stage_output=position)
    if not np.isfinite(erf).all():
        raise SystemExit('ERF: the gradient map is not finite')
    heat = log_scaled(erf, args.decades)
    ratios = high_contribution_area(erf, THRESHOLDS)
    name = type(backbone).__name__
    arch = args.arch or (osp.basename(args.config) if args.config else 'default arch')
    arch = 'custom arch' if arch.startswith('{') else arch
    title = (f'ERF {name} {arch} stage {stage} ({shape[0]}x{shape[1]}, {source})\n'
             + ', '.join(f'{int(t * 100)}%: {r:.3f}' for t, r in ratios.items()))
    save_heatmap(heat, args.out, title)
    if args.save_npy:
        np.save(osp.splitext(args.out)[0] + '.npy', erf)
    print(f'ERF of {name} stage {stage} over {source}, input {shape[0]}x{shape[1]}'
          f'{" (weights: " + args.checkpoint + ")" if args.checkpoint else " (random weights)"}')
    for t, r in ratios.items():
        print(f'  area ratio @ {int(t * 100)}% contribution: {r:.4f}')
    print(f'heatmap written to {args.out}')
    summary = dict(backbone=name, stage=stage, shape=list(shape),
                   area_ratio={str(t): r for t, r in ratios.items()}, out=args.out)
    print(json.dumps(summary))
    return erf, summary


if __name__ == '__main__':
    main()
