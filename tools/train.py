"""Train a detector, segmentor or classifier from an mmssm / OpenMMLab config.

    python tools/train.py configs/mask_rcnn_msvmamba_t_1x.py
    python tools/train.py CONFIG --work-dir work_dirs/x --amp --resume
    bash tools/dist_train.sh CONFIG 8            # torchrun, one process per GPU
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmssm.apis import (check_data_paths, convert_official_load_from,  # noqa: E402
                        default_work_dir, enable_amp, explain_data_errors, load_config,
                        set_launcher_env, setup_cpu_distributed, steady_heap_for_cpu_run,
                        strict_loading, task_scope, trust_checkpoints,
                        warn_feature_stride_mismatches)
from mmssm.apis.runner_utils import NON_STRICT_HELP  # noqa: E402
from mmssm.fileio import TRUST_HELP  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (mmdet/mmseg/mmpretrain).')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper, dynamic scale)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch) / auto_scale_lr.base_batch_size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from a checkpoint path, or from the latest one in the '
                        'work dir when no path is given')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='for the checkpoint to resume from (--resume) or load_from '
                        'only: ' + TRUST_HELP)
    parser.add_argument('--non-strict', action='store_true',
                        help='for --resume / load_from: ' + NON_STRICT_HELP)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config values, key=value (e.g. '
                        'train_dataloader.batch_size=4)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (pytorch = torchrun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    steady_heap_for_cpu_run()  # CPU-only machine: keep freed memory (mmssm.apis.cpu_heap)
    set_launcher_env(args.launcher, args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    task_scope(cfg)
    cfg.launcher = args.launcher
    setup_cpu_distributed(cfg, args.launcher)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(args.config)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {args.resume!r}')
        cfg.resume, cfg.load_from = True, args.resume
    if args.trust_pickle:
        from mmengine.runner import find_latest_checkpoint
        latest = find_latest_checkpoint(cfg.work_dir) if args.resume == 'auto' else None
        trust_checkpoints([cfg.get('load_from'), latest])
    if cfg.get('load_from') and not cfg.get('resume'):
        # e.g. the official stride-16 Vim classifier the stride-8 configs fine-tune from
        cfg.load_from = convert_official_load_from(cfg, cfg.load_from, cfg.work_dir)
    strict_loading(cfg, strict=not args.non_strict)
    loaders = ['train_dataloader']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        loaders.append('val_dataloader')
    check_data_paths(cfg, loaders)
    os.makedirs(cfg.work_dir, exist_ok=True)
    with explain_data_errors(cfg, loaders):
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        warn_feature_stride_mismatches(runner.model)
        runner.train()


if __name__ == '__main__':
    main()
