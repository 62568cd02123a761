"""Official detector / segmentor checkpoints -> verified mmssm checkpoints for our configs.

The tensors are converted by :func:`mmssm.converters.detseg.convert_detseg`; this module
adds what needs configs and models:

* :func:`config_dir` -- where mmssm's configs are: shipped inside the installed package
  (``mmssm/.mim/configs``, the way OpenMMLab packages ship theirs) or, in a source
  checkout, ``<repo>/configs``;
* :func:`infer_config` -- the config of that directory whose backbone the converted
  ``backbone.*`` tensors fit exactly (candidates by family, task and head type, ties
  broken by name tokens shared with the input file);
* :func:`convert_file` -- convert, build the config's model, refuse anything that would
  not load strictly (naming the offending tensors), fill and report the entries the
  forward never reads, and write ``{'state_dict', 'meta'}`` with tensors and plain
  strings only.

``tools/model_converters/official_to_mmssm.py`` is the command line.
"""
import copy
import glob
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from mmssm import families
from mmssm.converters.base import ConversionError, state_dict_diff
from mmssm.converters.checkpoint import extract_state_dict
from mmssm.converters.detseg import (ConversionReport, convert_detseg, fill_unread, head_kind,
                                     prepare_backbone, unread_entries)
from mmssm.fileio import atomic_save, load_checkpoint_file, preview

Tensor = torch.Tensor

# Config file name prefixes (``<prefix>_<family>_<variant>...py``) per head kind.
DET_KINDS = ('cascade_mask_rcnn', 'mask_rcnn', 'retinanet', 'ssdlite')
SEG_KINDS = ('upernet', 'fpn', 'deeplabv3', 'pspnet')
# File-name tokens that tell configs of one architecture apart: schedule and input size.
HINT_TOKENS = ('1x', '3x', '320', '512')


def config_dir() -> str:
    """mmssm's config directory: ``mmssm/.mim/configs`` of an installed package, else
    ``configs/`` next to the package in a source checkout."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    candidates = (osp.join(package, '.mim', 'configs'), osp.join(osp.dirname(package),
                                                                 'configs'))
    for candidate in candidates:
        if osp.isdir(candidate):
            return candidate
    raise FileNotFoundError(f'mmssm configs not found (looked in {", ".join(candidates)}); '
                            'reinstall mmssm or pass --config')


def load_model_config(path: str):
    """The config at ``path`` (only its ``model`` is used: built in its default scope)."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    return Config.fromfile(path)


def build_from_config(cfg, part: Optional[str] = None) -> nn.Module:
    """Build ``cfg.model`` (or only ``cfg.model[part]``) in the config's scope, without
    loading any pretrained weights."""
    from mmengine.registry import MODELS, DefaultScope

    model_cfg = copy.deepcopy(cfg.model)
    if part is not None:
        model_cfg = model_cfg[part]
    scope = cfg.get('default_scope', 'mmdet')
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(model_cfg)


def _family_of_backbone_type(type_name: str) -> Optional[str]:
    family = families.find(type_name)
    return family.name if family is not None else None


# --------------------------------------------------------------------------- inference
def candidate_configs(family: str, kind: Optional[str], task: str,
                      directory: Optional[str] = None) -> List[str]:
    """Top-level configs named ``<kind>_<family>_...py`` for the task."""
    directory = directory or config_dir()
    kinds = [kind] if kind else list(DET_KINDS if task == 'det' else SEG_KINDS)
    found = []
    for path in sorted(glob.glob(osp.join(directory, '*.py'))):
        stem = osp.splitext(osp.basename(path))[0]
        for k in kinds:
            # 'mask_rcnn' must not claim 'cascade_mask_rcnn' files
            if stem.startswith(f'{k}_{family}_') and not (
                    k == 'mask_rcnn' and stem.startswith('cascade_')):
                found.append(path)
                break
    return found


def _tokens(text: str) -> set:
    return {t for t in re.split(r'[^a-z0-9]+', text.lower()) if t}


def rank_configs(paths: Sequence[str], source_name: str) -> List[str]:
    """Order candidates: those sharing a schedule / input-size token (``3x``, ``512``)
    with the source file name first, then 1x before longer schedules, then by name."""
    hint = _tokens(osp.basename(source_name)) & set(HINT_TOKENS)

    def key(path):
        stem = osp.splitext(osp.basename(path))[0]
        tokens = _tokens(stem) & set(HINT_TOKENS)
        return (-len(tokens & hint), len(tokens - hint - {'1x'}), stem)

    return sorted(paths, key=key)


def infer_config(family: str, task: str, state_dict: Mapping[str, Tensor],
                 kind: Optional[str], source_name: str,
                 directory: Optional[str] = None) -> str:
    """The config whose backbone the converted ``backbone.*`` tensors fit exactly."""
    directory = directory or config_dir()
    candidates = candidate_configs(family, kind, task, directory)
    if not candidates:
        raise ConversionError(
            f'no config in {directory} for family {family!r}, task {task!r}'
            + (f' and head type {kind!r}' if kind else '') + '; pass --config')
    backbone_sd = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                              if k.startswith('backbone.'))
    tried, built = [], {}
    for path in rank_configs(candidates, source_name):
        cfg = load_model_config(path)
        if _family_of_backbone_type(cfg.model.backbone.get('type', '')) != family:
            continue
        signature = repr(cfg.model.backbone)  # 1x / 3x configs share the backbone
        if signature not in built:
            built[signature] = build_from_config(cfg, 'backbone')
        backbone = built[signature]
        try:
            adapted = prepare_backbone(family, backbone, OrderedDict(
                ('backbone.' + k, v) for k, v in backbone_sd.items()))
        except (ValueError, KeyError, RuntimeError, NotImplementedError) as err:
            tried.append(f'{osp.basename(path)} ({err})')
            continue
        adapted = OrderedDict((k[len('backbone.'):], v) for k, v in adapted.items())
        missing, unexpected, mismatched = state_dict_diff(backbone, adapted)
        unread = unread_entries(family, backbone)
        missing = [k for k in missing if k not in unread]
        if not (missing or unexpected or mismatched):
            return path
        tried.append(f'{osp.basename(path)} ({len(missing)} missing, {len(unexpected)} '
                     f'unexpected, {len(mismatched)} mis-shaped)')
    raise ConversionError(
        'no config matches the backbone of this checkpoint: ' + '; '.join(tried) +
        '. Pass --config explicitly to see the exact differences.')


# --------------------------------------------------------------------------- top level
def convert_file(src: str, dst: str, family: str, task: str,
                 config: Optional[str] = None, trust_pickle: bool = False,
                 directory: Optional[str] = None, log=print) -> ConversionReport:
    """Convert ``src`` and write ``dst`` only if it loads strictly into the config's
    model (``config``, or the one inferred from ``directory``, default
    :func:`config_dir`). Raises :class:`ConversionError` (or the loader's errors)
    otherwise."""
    if osp.abspath(src) == osp.abspath(dst):
        raise ConversionError('output path equals the input path; refusing to overwrite '
                              'the official file')
    contents = load_checkpoint_file(src, trust_pickle=trust_pickle)
    state_dict, report = convert_detseg(family, task, contents)
    kind = head_kind(extract_state_dict(contents), report.layout)
    if config is None:
        config = infer_config(family, task, state_dict, kind, src, directory)
        log(f'config inferred from the checkpoint: {config} (pass --config to override)')
    elif not osp.isfile(config):
        raise ConversionError(f'--config {config!r} does not exist')
    cfg = load_model_config(config)
    cfg_family = _family_of_backbone_type(cfg.model.backbone.get('type', ''))
    if cfg_family != family:
        raise ConversionError(f'{config} builds a {cfg_family or cfg.model.backbone.get("type")}'
                              f' backbone, not {family}')
    model = build_from_config(cfg)
    target = list(model.state_dict())
    if report.layout == 'detectron2':  # names of norms / cascade stages come from the model
        state_dict, report = convert_detseg(family, task, contents, target)
    try:
        state_dict = prepare_backbone(family, model.backbone, state_dict)
    except (ValueError, KeyError, RuntimeError, NotImplementedError) as err:
        raise ConversionError(f'the backbone tensors do not fit the '
                              f'{type(model.backbone).__name__} of {config}: {err}. '
                              'Wrong --config / variant?') from err
    fill_unread(family, model, state_dict, report)
    report.config = config
    report.model = f'{type(model).__name__} with {type(model.backbone).__name__}'
    missing, unexpected, mismatched = state_dict_diff(model, state_dict)
    if missing or unexpected or mismatched:
        raise ConversionError(
            f'the converted checkpoint would not load strictly into {report.model} built '
            f'from {config}: {len(missing)} missing ({preview(missing, 6)}), '
            f'{len(unexpected)} unexpected ({preview(unexpected, 6)}), {len(mismatched)} '
            f'mis-shaped ({preview(mismatched, 4)}). Wrong --config / variant?\n'
            + report.summary())
    model.load_state_dict(state_dict, strict=True)  # the real thing, hooks included
    out = OrderedDict((k, state_dict[k].detach().clone().contiguous()) for k in target)
    meta = dict(mmssm_family=family, task=task, layout=report.layout,
                config=osp.relpath(config) if not osp.isabs(config) else config,
                source=osp.basename(src), converter='tools/model_converters/official_to_mmssm.py')
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    atomic_save({'state_dict': out, 'meta': meta}, dst)  # never a truncated output
    return report
