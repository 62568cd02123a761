"""Config handling shared by ``tools/train.py`` and ``tools/test.py``.

One pair of scripts serves mmdet, mmseg and mmpretrain configs: mmengine's Runner is
task-agnostic once the config carries its ``default_scope`` and mmssm is imported.
"""
import contextlib
import json
import os
import os.path as osp
from typing import Iterable, Iterator, List, Optional, Tuple

from mmengine.config import Config, DictAction  # noqa: F401  (re-exported for the tools)

TASK_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config, merge ``--cfg-options`` and make sure mmssm is imported."""
    import mmssm  # noqa: F401  (registers our models, applies compat shims)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    imports = cfg.get('custom_imports', dict(imports=[])).get('imports', [])
    if isinstance(imports, str):
        imports = [imports]
    if 'mmssm' not in imports:
        cfg.custom_imports = dict(imports=list(imports) + ['mmssm'],
                                  allow_failed_imports=False)
    return cfg


def task_scope(cfg: Config) -> str:
    scope = cfg.get('default_scope')
    if scope not in TASK_SCOPES:
        raise ValueError(f'config default_scope is {scope!r}; mmssm tools run configs of '
                         f'{TASK_SCOPES} (inherit their default_runtime.py)')
    return scope


def _dataset_paths(dataset: dict) -> Iterable[Tuple[str, str]]:
    """(description, path) pairs a dataset config needs on disk."""
    if not isinstance(dataset, dict):
        return
    if dataset.get('type') in ('ConcatDataset', ) and 'datasets' in dataset:
        for sub in dataset['datasets']:
            yield from _dataset_paths(sub)
        return
    if 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset
        yield from _dataset_paths(dataset['dataset'])
        return
    root = dataset.get('data_root') or ''
    if root:
        yield 'data_root', root
    ann = dataset.get('ann_file')
    if ann:
        yield 'ann_file', ann if osp.isabs(ann) or not root else osp.join(root, ann)
    prefix = dataset.get('data_prefix') or {}
    for key, value in prefix.items() if isinstance(prefix, dict) else ():
        if value:
            yield f'data_prefix.{key}', value if osp.isabs(value) or not root else osp.join(
                root, value)


def check_data_paths(cfg: Config, loaders: Iterable[str]) -> None:
    """Fail early, naming the dataloader and field, when dataset files are missing."""
    problems: List[str] = []
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg:
            continue
        for what, path in _dataset_paths(loader_cfg.get('dataset', {})):
            if not osp.exists(path):
                problems.append(f'{loader}.dataset.{what}: {path!r} does not exist')
    if problems:
        raise FileNotFoundError(
            'dataset files are missing:\n  ' + '\n  '.join(problems) +
            '\nPrepare the dataset as described in docs/getting_started.md, or point the '
            "config at it with --cfg-options (e.g. train_dataloader.dataset.data_root=...). "
            'For a quick start use the embedded demo data: make demo.')


def _broken_json_files(cfg: Config, loaders: Iterable[str]) -> List[str]:
    """The ``.json`` annotation files of these dataloaders that do not parse, described."""
    broken, seen = [], set()
    for loader in loaders:
        paths = list(_dataset_paths((cfg.get(loader) or {}).get('dataset', {})))
        evaluators = cfg.get(loader.replace('_dataloader', '_evaluator')) or []
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            if isinstance(evaluator, dict) and evaluator.get('ann_file'):  # CocoMetric
                paths.append(('ann_file', evaluator['ann_file']))
        for what, path in paths:
            if (what != 'ann_file' or not str(path).endswith('.json') or path in seen
                    or not osp.isfile(path)):
                continue
            seen.add(path)
            try:
                with open(path, 'rb') as f:
                    json.load(f)
            except (ValueError, UnicodeDecodeError) as err:
                broken.append(f'{path!r} ({osp.getsize(path)} bytes): {err}')
    return broken


@contextlib.contextmanager
def explain_data_errors(cfg: Config, loaders: Iterable[str]) -> Iterator[None]:
    """Name the file when a dataset fails on an annotation file that is not valid JSON
    (pycocotools and mmengine report only the position of the parse error)."""
    loaders = list(loaders)
    try:
        yield
    except json.JSONDecodeError as err:
        broken = _broken_json_files(cfg, loaders)
        if not broken:
            raise
        raise ValueError('annotation file is not valid JSON (truncated by an interrupted '
                         'download or copy?):\n  ' + '\n  '.join(broken) +
                         '\nDownload or copy it again.') from err


NON_STRICT_HELP = (
    'load the checkpoint even if it does not fill the model exactly (missing, unexpected '
    'or mis-shaped entries are then only reported). By default such a checkpoint stops '
    'the run with a list of the differences; declare deliberate ones in the config '
    "instead (custom_hooks=[dict(type='mmssm.StrictLoadHook', allow_missing=[...])], "
    'docs/security.md)')


def strict_loading(cfg: Config, strict: bool = True) -> None:
    """Make ``load_from``, ``--resume`` and ``tools/test.py`` strict: add
    ``mmssm.StrictLoadHook`` to ``custom_hooks`` unless the config has one (with its
    declared exceptions); ``strict=False`` (``--non-strict``) turns its refusals into
    warnings."""
    hooks = list(cfg.get('custom_hooks') or [])
    ours = [h for h in hooks if isinstance(h, dict)
            and str(h.get('type', '')).rsplit('.', 1)[-1] == 'StrictLoadHook']
    if not ours:
        hooks.append(dict(type='mmssm.StrictLoadHook'))
        ours = hooks[-1:]
    if not strict:
        for hook in ours:
            hook['strict'] = False
    cfg.custom_hooks = hooks


def trust_checkpoints(paths: Iterable[Optional[str]], flag: str = '--trust-pickle') -> List[str]:
    """A tool's ``--trust-pickle``: opt in to full unpickling of exactly these files
    (local paths or URLs; empty entries are skipped). Returns what was trusted; an error
    if there is nothing to trust, so the flag never silently does nothing."""
    from mmssm.fileio import trust_file
    trusted = [p for p in paths if p]
    if not trusted:
        raise ValueError(f'{flag}: there is no checkpoint to trust (give the checkpoint '
                         'path, --resume PATH or load_from)')
    for path in trusted:
        trust_file(path)
    return trusted


def default_work_dir(config_path: str) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


_CLASSIFIER_PARTS = ('backbone.', 'neck.', 'head.', 'data_preprocessor.')


def _backbone_family(cfg: Config) -> Optional[str]:
    """The mmssm family of the config's backbone (``type='mmssm.VMamba'`` -> 'vmamba')."""
    from mmssm import families
    backbone = cfg.get('model', {}).get('backbone') or {}
    if not str(backbone.get('type', '')).startswith('mmssm.'):
        return None
    family = families.find(backbone['type'])
    return family.name if family is not None else None


def convert_official_load_from(cfg: Config, path: str, work_dir: str,
                               trust_pickle: bool = False) -> str:
    """``load_from`` for an official classification checkpoint: converted on the fly.

    For an mmpretrain config with an mmssm backbone, a checkpoint in the official layout
    of the backbone's family (e.g. ``vssm1_tiny_0230s_ckpt_epoch_264.pth``) is converted
    with its classifier (:func:`mmssm.converters.classification.convert_classifier`) and
    written to ``<work_dir>/converted/<name>``, whose path is returned. Any other file
    (mmengine / mmssm checkpoints, other configs) is returned unchanged, for mmengine to
    load. The file is read safely (:func:`mmssm.fileio.load_checkpoint_file`).
    """
    if cfg.get('default_scope') != 'mmpretrain' or not osp.isfile(path):
        return path
    family = _backbone_family(cfg)
    if family is None:
        return path
    import torch

    from mmssm.converters import extract_state_dict
    from mmssm.fileio import load_checkpoint_file
    from mmssm.converters.classification import convert_classifier, looks_like_classifier
    contents = load_checkpoint_file(path, trust_pickle=trust_pickle)
    state_dict = extract_state_dict(contents)
    if all(k.startswith(_CLASSIFIER_PARTS) for k in state_dict):
        return path  # already in the classifier's naming
    if not looks_like_classifier(family, contents):
        raise ValueError(f'{path!r} is neither a checkpoint of this classifier (keys '
                         "'backbone.*', 'head.*') nor an official classification "
                         f'checkpoint of {family} (first keys: {", ".join(list(state_dict)[:4])})')
    converted = convert_classifier(family, contents)
    out = osp.join(work_dir, 'converted', osp.basename(path))
    os.makedirs(osp.dirname(out), exist_ok=True)
    torch.save({'state_dict': dict(converted),
                'meta': {'mmssm_family': family, 'mmssm_task': 'cls',
                         'source': osp.basename(path)}}, out)
    from mmengine.logging import print_log
    print_log(f'official {family} classification checkpoint {path!r} converted with its '
              f'classifier to {out!r}', logger='current')
    return out


def enable_amp(cfg: Config) -> None:
    """Mixed precision through mmengine's AmpOptimWrapper (dynamic loss scale)."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper == 'AmpOptimWrapper':
        return
    if wrapper != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_launcher_env(launcher: str, local_rank: Optional[int]) -> None:
    if launcher != 'none' and 'LOCAL_RANK' not in os.environ and local_rank is not None:
        os.environ['LOCAL_RANK'] = str(local_rank)


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Make ``--launcher pytorch`` work without CUDA (e.g. ``torchrun --nproc_per_node 2``
    on a CPU machine). Returns True if it changed anything.

    mmengine 0.10.7 cannot do it alone: its ``init_dist`` calls
    ``torch.cuda.set_device`` (an AttributeError on CPU-only torch), its default backend
    'nccl' needs GPUs, and it wraps the model in DistributedDataParallel with
    ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module. So, when CUDA is
    unavailable: the backend becomes 'gloo' (unless the config names one that is not
    'nccl'), the process group is initialised here from torchrun's environment (the
    Runner then sees it initialised and skips ``init_dist``), and the model wrapper gets
    ``device_ids=None``.
    """
    import torch
    if launcher != 'pytorch' or torch.cuda.is_available():
        return False
    import torch.distributed as dist
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs the torchrun environment; missing '
                           f'{missing} (start with torchrun or tools/dist_train.sh)')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        dist.init_process_group(backend=dist_cfg['backend'], **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.setdefault('device_ids', None)  # a value in the cfg beats the Runner's default
    cfg.model_wrapper_cfg = wrapper
    return True
