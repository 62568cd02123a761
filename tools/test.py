"""Evaluate a checkpoint with an mmssm / OpenMMLab config.

    python tools/test.py configs/mask_rcnn_msvmamba_t_1x.py work_dirs/x/epoch_12.pth
    python tools/test.py configs/cls_vmamba_t_in1k.py vssm1_tiny_0230s_ckpt_epoch_264.pth
    python tools/test.py CONFIG CKPT --show-dir vis        # write prediction images
    python tools/test.py SEG_CONFIG CKPT --tta             # multi-scale + flip (mmseg)
    bash tools/dist_test.sh CONFIG CKPT 8
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmssm.apis import (check_data_paths, convert_official_load_from,  # noqa: E402
                        default_work_dir, explain_data_errors, load_config, set_launcher_env,
                        setup_cpu_distributed, steady_heap_for_cpu_run, strict_loading,
                        task_scope, trust_checkpoints, warn_feature_stride_mismatches)
from mmssm.apis.runner_utils import NON_STRICT_HELP  # noqa: E402
from mmssm.fileio import TRUST_HELP  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (mmengine/mmssm format; official '
                        'classification checkpoints of the config\'s family are converted '
                        'on the fly; convert official detector/segmentor files with '
                        'tools/model_converters first)')
    parser.add_argument('--trust-pickle', action='store_true', help=TRUST_HELP)
    parser.add_argument('--non-strict', action='store_true', help=NON_STRICT_HELP)
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', help='dump raw predictions to this .pkl file')
    parser.add_argument('--show', action='store_true', help='display predictions')
    parser.add_argument('--show-dir', help='write images with predictions drawn to '
                        '<work_dir>/<timestamp>/<show-dir>')
    parser.add_argument('--wait-time', type=float, default=2, help='--show interval (s)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation from the config (tta_model/tta_pipeline)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config values, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None)
    return parser.parse_args(argv)


def enable_visualization(cfg, args) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need default_hooks.visualization in the config')
    hook.draw = True
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time
    if args.show_dir:
        if task_scope(cfg) == 'mmdet':
            hook.test_out_dir = args.show_dir
        else:  # mmseg/mmpretrain save through the visualizer backends
            hook.interval = 1
            cfg.visualizer.save_dir = osp.join(cfg.work_dir, args.show_dir)


def enable_tta(cfg) -> None:
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise ValueError('--tta needs tta_model and tta_pipeline in the config')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def main(argv=None):
    args = parse_args(argv)
    steady_heap_for_cpu_run()  # CPU-only machine: keep freed memory (mmssm.apis.cpu_heap)
    set_launcher_env(args.launcher, args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    scope = task_scope(cfg)
    cfg.launcher = args.launcher
    setup_cpu_distributed(cfg, args.launcher)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(args.config)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint!r}')
    if args.trust_pickle:
        trust_checkpoints([args.checkpoint])
    # an official classification checkpoint: converted (with its head) into the work dir
    cfg.load_from = convert_official_load_from(cfg, args.checkpoint, cfg.work_dir)
    strict_loading(cfg, strict=not args.non_strict)
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        enable_tta(cfg)
    check_data_paths(cfg, ['test_dataloader'])
    if args.out and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError('--out must be a .pkl file')
    with explain_data_errors(cfg, ['test_dataloader']):
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        warn_feature_stride_mismatches(runner.model)
        if args.out:
            if scope == 'mmdet':
                from mmdet.evaluation import DumpDetResults
                runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
            else:
                from mmengine.evaluator import DumpResults
                runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
        return runner.test()


if __name__ == '__main__':
    main()
