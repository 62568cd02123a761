"""Command line shared by ``tools/model_converters/<family>_to_mmssm.py``."""
import argparse
import hashlib
import os
from typing import Optional, Sequence

from mmssm import families
from mmssm.fileio import TRUST_HELP, atomic_save, load_checkpoint_file

from .base import convert_official
from .checkpoint import extract_state_dict


def build_parser(family: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=f'Convert an official {family} checkpoint (classification or '
        'detection/segmentation) into an mmssm backbone checkpoint (tensors only), or, '
        'with --task cls, an official classification checkpoint into a checkpoint of '
        f'the whole classifier of configs/cls_{family}_*_in1k.py (backbone + head).')
    parser.add_argument('src', help='official checkpoint file')
    parser.add_argument('dst', help='output file (.pth)')
    parser.add_argument('--task', choices=['backbone', 'cls'], default='backbone',
                        help="'backbone' (default): the backbone only, the classifier is "
                        "dropped; 'cls': backbone and classification head, keys "
                        "'backbone.*' / 'head.*' (load with tools/test.py or load_from)")
    parser.add_argument('--key', default=None,
                        help="checkpoint entry holding the weights (e.g. 'model_ema' or "
                        "MobileMamba's 'net_E'); found automatically by default")
    parser.add_argument('--prefix', default='',
                        help="prefix added to every output key, e.g. 'backbone.' to load "
                        'the file with mmengine load_from into a detector')
    parser.add_argument('--publish', action='store_true',
                        help='append the first 8 hex digits of the sha256 to the file name')
    parser.add_argument('--trust-pickle', action='store_true', help=TRUST_HELP)
    return parser


def main(family: str, argv: Optional[Sequence[str]] = None) -> str:
    families.get(family)  # an unknown family is an error naming the known ones
    args = build_parser(family).parse_args(argv)
    contents = load_checkpoint_file(args.src, trust_pickle=args.trust_pickle)
    if args.key is not None:
        contents = extract_state_dict(contents, args.key)
    total = len(extract_state_dict(contents))
    if args.task == 'cls':
        if args.prefix:
            raise SystemExit('--prefix does not apply to --task cls (the keys are the '
                             "classifier's: backbone.*, head.*)")
        from .classification import convert_classifier
        converted = convert_classifier(family, contents)
    else:
        converted = convert_official(family, contents)
    state_dict = {args.prefix + k: v.contiguous() for k, v in converted.items()}
    dst = args.dst
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    atomic_save({'state_dict': state_dict,
                 'meta': {'mmssm_family': family, 'mmssm_task': args.task,
                          'source': os.path.basename(args.src)}}, dst)
    if args.publish:
        with open(dst, 'rb') as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:8]
        stem, ext = os.path.splitext(dst)
        final = f'{stem}-{digest}{ext}'
        os.replace(dst, final)
        dst = final
    what = 'classifier' if args.task == 'cls' else 'backbone'
    print(f'{family}: {total} tensors in {args.src} -> {len(state_dict)} {what} tensors '
          f'written to {dst}')
    return dst
