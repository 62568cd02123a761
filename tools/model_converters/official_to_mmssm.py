#!/usr/bin/env python
"""Convert an official detector / segmentor checkpoint for evaluation with our configs.

    python tools/model_converters/official_to_mmssm.py --family vmamba --task det \
        mask_rcnn_vssm_fpn_coco_tiny_s_epoch_12.pth work_dirs/official/mask_rcnn_vmamba_t_1x.pth
    python tools/test.py configs/mask_rcnn_vmamba_t_1x.py \
        work_dirs/official/mask_rcnn_vmamba_t_1x.pth

The backbone goes through the family converter, neck and head tensors keep (mmdet 3.x /
mmseg 1.x / mmseg 0.x) or get (detectron2) the names our configs use; the result is
written only if it loads strictly into the model of the matching config (inferred from
family, task, head type and backbone shapes among mmssm's configs -- the installed
package's or the checkout's -- or given with --config). Loading is safe by default
(weights_only + an allow-list of known upstream objects); --trust-pickle opts in to full
unpickling for trusted files. See docs/official_checkpoints.md.
"""
import argparse
import sys
from typing import Optional, Sequence

try:
    import mmssm  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    import os.path as osp
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmssm import families  # noqa: E402
from mmssm.apis.official_checkpoints import ConversionError, convert_file  # noqa: E402
from mmssm.converters.detseg import TASKS  # noqa: E402
from mmssm.fileio import TRUST_HELP  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Convert a whole official detector/segmentor checkpoint (backbone, '
        'neck, heads) into an mmssm checkpoint that loads strictly into the matching '
        'mmssm config, for tools/test.py.')
    parser.add_argument('src', help='official checkpoint file')
    parser.add_argument('dst', help='output file (.pth): {"state_dict", "meta"}, tensors only')
    parser.add_argument('--family', required=True, choices=families.names())
    parser.add_argument('--task', required=True, choices=TASKS,
                        help='det (mmdet 3.x configs) or seg (mmseg 1.x configs)')
    parser.add_argument('--config', default=None,
                        help="target config; default: the mmssm config for this family, "
                        "task and head type whose backbone fits the checkpoint (ties broken "
                        'by name tokens shared with the input file name, e.g. 3x/ms/512)')
    parser.add_argument('--config-dir', default=None,
                        help='where to look for configs when --config is not given '
                        "(default: mmssm's configs, installed or in the checkout)")
    parser.add_argument('--trust-pickle', action='store_true', help=TRUST_HELP)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = convert_file(args.src, args.dst, args.family, args.task, args.config,
                              args.trust_pickle, args.config_dir)
    except (ConversionError, FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        print(f'official_to_mmssm: refused: {err}', file=sys.stderr)
        return 1
    print(report.summary())
    print(f'  strict load into {report.model}: OK')
    print(f'  written: {args.dst}')
    print(f'  evaluate: python tools/test.py {report.config} {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
