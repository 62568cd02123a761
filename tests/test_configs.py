"""Every config under ``configs/`` loads, states its recipe explicitly and builds its model.

* Loading: ``mmengine.Config.fromfile`` with the ``mmdet::`` / ``mmseg::`` bases of the
  installed packages.
* Recipe (model-zoo configs, ``configs/*.py``): configs inherit their sibling (a variant
  states only what differs) or a shared recipe of ``configs/_base_``, so the checks are on
  the *resolved* config: the hyper-parameters the model zoo promises (backbone with
  ``_delete_``-clean kwargs, drop path, ``init_cfg`` with the official checkpoint, AdamW +
  betas + weight decay + paramwise settings, schedule, pipelines, batch size = the "Total
  batch" comment of the file or of the config it inherits = ``auto_scale_lr.base_batch_size``)
  are there and equal the values of :data:`RECIPES` (the papers' / official configs'
  values), and the header says whether the paper reports a result.
* Building: the model is built through the task's registry on the ``meta`` device (no
  memory, no initialisation of weights: ``init_weights`` is never called, so the official
  checkpoints named in ``init_cfg`` need not exist). The backbone must be an mmssm class;
  its output channels/strides (from its attributes, checked against a real forward of small
  archs in ``test_backbone_output_rule``) are pushed through the built neck on ``meta``
  tensors, and the neck/head ``in_channels`` and the anchor / ROI / FPN-head strides must
  match what actually arrives.
* ``configs/metafile_*.yml`` / ``model-index.yml`` and ``docs/model_zoo.md`` cover every
  model-zoo config.
"""
import ast
import functools
import importlib
import inspect
import re
from pathlib import Path
from typing import Optional

import pytest
import torch
import yaml

import mmssm  # noqa: F401  (compat shims before mmengine resolves mmdet::/mmseg:: bases)
import mmengine.config.utils as mmengine_config_utils
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmssm import families
from mmssm.models.backbones.base import SSMBackbone
from mmssm.registry import MODELS as MMSSM_MODELS

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs'
ALL_CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)
ZOO_CONFIGS = [p for p in ALL_CONFIGS if p.parent == CONFIG_DIR]
# detectors / segmentors; the ImageNet classifiers (cls_*) are checked by test_cls_configs.py
DOWNSTREAM_CONFIGS = [p for p in ZOO_CONFIGS if not p.stem.startswith('cls_')]
FAMILIES = families.names()

RESULT_RE = re.compile(r'^# Paper result: (reported|NOT REPORTED by the paper)', re.M)
BATCH_RE = re.compile(r'^# Total batch: (\d+) = (\d+) images/GPU x (\d+) GPUs', re.M)
NAME_RE = re.compile(
    r'^(mask_rcnn|cascade_mask_rcnn|retinanet|ssdlite|upernet|fpn|deeplabv3|pspnet)_'
    r'(' + '|'.join(FAMILIES) + r')_([a-z0-9_]+?)_'
    r'(1x|3x_ms|100ep_lsj|320_coco|512_coco|\d+k_ade20k)$')


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope='module', autouse=True)
def _cache_external_metafiles():
    """mmengine resolves every ``pkg::`` base by first parsing all of the package's
    metafiles (~0.4 s per base). Cache those yaml reads for this module; the result of
    the resolution is unchanged."""
    original = mmengine_config_utils.load
    cached = functools.lru_cache(maxsize=None)(original)

    def load(path, *args, **kwargs):
        if not args and not kwargs and isinstance(path, str) and '.mim' in path:
            return cached(path)
        return original(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mmengine_config_utils, 'load', load)
        yield


@functools.lru_cache(maxsize=None)
def load_config(path: Path) -> Config:
    return Config.fromfile(str(path))


@functools.lru_cache(maxsize=None)
def build_model(path: Path) -> torch.nn.Module:
    cfg = load_config(path)
    scope = cfg.get('default_scope')
    assert scope in ('mmdet', 'mmseg', 'mmpretrain'), f'{_rel(path)}: default_scope {scope!r}'
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with torch.device('meta'):
        return registry.build(cfg.model)


def local_bases(path: Path) -> list:
    """The files of ``configs/`` that ``path`` inherits from, nearest first."""
    chain, todo = [], [path]
    while todo:
        current = todo.pop(0)
        bases = top_level_names(current.read_text()).get('_base_')
        if bases is None:
            continue
        bases = ast.literal_eval(bases)
        for base in [bases] if isinstance(bases, str) else bases:
            if '::' not in base:
                resolved = (current.parent / base).resolve()
                assert resolved.is_file(), f'{_rel(current)}: missing base {base}'
                chain.append(resolved)
                todo.append(resolved)
    return chain


def stated_comment(path: Path, regex) -> Optional[re.Match]:
    """``regex`` in the file, else in the nearest config it inherits that has it."""
    for candidate in [path] + local_bases(path):
        match = regex.search(candidate.read_text())
        if match:
            return match
    return None


def top_level_names(text: str) -> dict:
    """Top-level assignments of a config file: name -> ast value node."""
    names = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node.value
    return names


def inner_dataset(dataset: dict) -> dict:
    while 'pipeline' not in dataset and 'dataset' in dataset:  # RepeatDataset & co.
        dataset = dataset['dataset']
    return dataset


def backbone_outputs(backbone) -> list:
    """[(channels, stride)] of the backbone's outputs, as the backbone declares them."""
    assert len(backbone.out_channels) == len(backbone.out_strides)
    return list(zip(backbone.out_channels, backbone.out_strides))


def meta_features(outputs, size):
    return [torch.empty(1, c, int(size // s), int(size // s), device='meta')
            for c, s in outputs]


def as_list(value):
    return list(value) if isinstance(value, (list, tuple, torch.nn.ModuleList)) else [value]


# ------------------------------------------------------------------------------ tests
def test_configs_present():
    names = {p.stem for p in ZOO_CONFIGS}
    assert 'mask_rcnn_msvmamba_t_1x' in names
    for family in FAMILIES:
        for prefix in ('mask_rcnn', 'retinanet', 'upernet', 'fpn'):
            assert any(n.startswith(f'{prefix}_{family}_') for n in names), (prefix, family)
    for name in ('ssdlite_mobilemamba_b1_320_coco', 'ssdlite_mobilemamba_b1_512_coco',
                 'deeplabv3_mobilemamba_b4_80k_ade20k', 'pspnet_mobilemamba_b4_80k_ade20k',
                 'cascade_mask_rcnn_vim_ti_100ep_lsj', 'upernet_vim_ti_60k_ade20k'):
        assert name in names


@pytest.mark.parametrize('path', DOWNSTREAM_CONFIGS, ids=lambda p: p.stem)
def test_zoo_config_states_recipe(path):
    text = path.read_text()
    rel = _rel(path)
    assert NAME_RE.match(path.stem), f'{rel}: name does not follow the model-zoo scheme'
    cfg = load_config(path)

    # bases: a sibling / a shared recipe of configs/_base_ / a family's backbone of
    # configs/_base_/models (local files), or the installed OpenMMLab packages
    bases = ast.literal_eval(top_level_names(text)['_base_'])
    bases = [bases] if isinstance(bases, str) else bases
    assert bases and all(b.startswith(('mmdet::', 'mmseg::', './')) for b in bases), bases
    local_dirs = (CONFIG_DIR, CONFIG_DIR / '_base_', CONFIG_DIR / '_base_' / 'models')
    assert all(p.parent in local_dirs for p in local_bases(path))
    # the backbone bases' helper variables are taken (_base_.pop), never left behind
    assert not {'backbone', 'neck'} & set(cfg), f'{rel}: backbone base helper left over'
    assert cfg.custom_imports == dict(imports=['mmssm'], allow_failed_imports=False)
    assert RESULT_RE.search(text), f'{rel}: header must say whether the paper reports it'

    # backbone: an mmssm class, no stray keys from the base backbone, explicit recipe
    backbone = cfg.model.backbone
    assert backbone.type.startswith('mmssm.'), backbone.type
    cls = MMSSM_MODELS.get(backbone.type.split('.', 1)[1])
    assert cls is not None and issubclass(cls, SSMBackbone), backbone.type
    accepted = set(inspect.signature(cls.__init__).parameters) - {'self'}
    stray = set(backbone) - {'type'} - accepted
    assert not stray, f'{rel}: keys the backbone does not take: {sorted(stray)}'
    assert 'drop_path_rate' in backbone and 'out_indices' in backbone and 'arch' in backbone
    init = backbone.init_cfg
    assert init['type'] == 'Pretrained' and init['checkpoint'].endswith(('.pth', '.ckpt'))
    assert init['checkpoint'] == cfg.pretrained

    # optimizer, schedule, batch
    wrapper = cfg.optim_wrapper
    assert wrapper.type in ('OptimWrapper', 'AmpOptimWrapper')
    opt = wrapper.optimizer
    assert opt.type == 'AdamW'
    for key in ('lr', 'betas', 'weight_decay'):
        assert key in opt, f'{rel}: optimizer.{key} missing'
    assert 'paramwise_cfg' in wrapper and 'clip_grad' in wrapper
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'auto_scale_lr',
                'train_dataloader', 'train_pipeline', 'test_pipeline'):
        assert key in cfg, f'{rel}: {key} is not set'
    assert cfg.param_scheduler and all('begin' in s and 'end' in s for s in cfg.param_scheduler)
    loop = cfg.train_cfg
    assert ('max_epochs' in loop) != ('max_iters' in loop)
    if 'max_epochs' in loop:
        assert cfg.param_scheduler[-1]['end'] == loop['max_epochs']
    else:
        assert cfg.param_scheduler[-1]['end'] == loop['max_iters']
    match = stated_comment(path, BATCH_RE)
    assert match, f'{rel}: needs a "# Total batch: N = B images/GPU x G GPUs" comment'
    total, per_gpu, gpus = map(int, match.groups())
    assert total == per_gpu * gpus
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.auto_scale_lr.base_batch_size == total and cfg.auto_scale_lr.enable is False

    # pipelines are the ones used by the loaders; normalisation is stated
    assert inner_dataset(cfg.train_dataloader.dataset).pipeline == cfg.train_pipeline
    assert inner_dataset(cfg.val_dataloader.dataset).pipeline == cfg.test_pipeline
    assert inner_dataset(cfg.test_dataloader.dataset).pipeline == cfg.test_pipeline
    pre = cfg.model.data_preprocessor
    assert pre.mean == [123.675, 116.28, 103.53] and pre.std == [58.395, 57.12, 57.375]


# The recipe of every model-zoo config, resolved (the values the papers / official configs
# state, recorded when the configs were written out in full; inheritance must keep them).
# batch = (images per GPU, total); neck / head = the in_channels they are built with.
RECIPES = {
    'cascade_mask_rcnn_vim_s_100ep_lsj': dict(arch='small', dpr=0.1, lr=0.0001, wd=0.1,
        length=184375, batch=(4, 64), milestones=[163889, 177546], wrapper='AmpOptimWrapper',
        neck=384),
    'cascade_mask_rcnn_vim_ti_100ep_lsj': dict(arch='tiny', dpr=0.1, lr=0.0001, wd=0.1,
        length=184375, batch=(4, 64), milestones=[163889, 177546], wrapper='AmpOptimWrapper',
        neck=192),
    'deeplabv3_mobilemamba_b4_80k_ade20k': dict(arch='b4', dpr=0.03, lr=0.00012, wd=0.05,
        length=80000, batch=(8, 32), clip=0.1, head=448),
    'fpn_efficientvmamba_t_80k_ade20k': dict(arch='tiny', dpr=0.2, lr=0.0001, wd=0.0001,
        length=80000, batch=(4, 16), neck=[48, 96, 192, 384]),
    'fpn_mobilemamba_b4_160k_ade20k': dict(arch='b4', dpr=0.03, lr=0.00012, wd=0.05,
        length=160000, batch=(8, 32), neck=[200, 376, 448]),
    'fpn_msvmamba_t_80k_ade20k': dict(arch='tiny', dpr=0.2, lr=0.0001, wd=0.0001, length=80000,
        batch=(4, 16), neck=[96, 192, 384, 768]),
    'fpn_vim_ti_80k_ade20k': dict(arch='tiny', dpr=0.1, lr=0.0001, wd=0.0001, length=80000,
        batch=(4, 16), neck=[192, 192, 192, 192]),
    'fpn_vmamba_t_80k_ade20k': dict(arch='tiny_s1l8', dpr=0.2, lr=0.0001, wd=0.0001, length=80000,
        batch=(4, 16), neck=[96, 192, 384, 768]),
    'mask_rcnn_efficientvmamba_b_1x': dict(arch='base', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], wrapper='AmpOptimWrapper', neck=[96, 192, 384, 768]),
    'mask_rcnn_efficientvmamba_b_3x_ms': dict(arch='base', dpr=0.2, lr=0.0001, wd=0.05, length=36,
        batch=(2, 16), milestones=[27, 33], wrapper='AmpOptimWrapper', neck=[96, 192, 384, 768]),
    'mask_rcnn_efficientvmamba_s_1x': dict(arch='small', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], wrapper='AmpOptimWrapper', neck=[64, 128, 256, 512]),
    'mask_rcnn_efficientvmamba_s_3x_ms': dict(arch='small', dpr=0.2, lr=0.0001, wd=0.05,
        length=36, batch=(2, 16), milestones=[27, 33], wrapper='AmpOptimWrapper',
        neck=[64, 128, 256, 512]),
    'mask_rcnn_efficientvmamba_t_1x': dict(arch='tiny', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(4, 16), milestones=[8, 11], wrapper='AmpOptimWrapper', neck=[48, 96, 192, 384]),
    'mask_rcnn_efficientvmamba_t_3x_ms': dict(arch='tiny', dpr=0.2, lr=0.0001, wd=0.05, length=36,
        batch=(2, 16), milestones=[27, 33], wrapper='AmpOptimWrapper', neck=[48, 96, 192, 384]),
    'mask_rcnn_mobilemamba_b1_1x': dict(arch='b1', dpr=0.03, lr=0.0002, wd=0.05, length=12,
        batch=(4, 16), clip=0.1, neck=[200, 376, 448]),
    'mask_rcnn_msvmamba_m_1x': dict(arch='micro', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[64, 128, 256, 512]),
    'mask_rcnn_msvmamba_m_3x_ms': dict(arch='micro', dpr=0.2, lr=0.0001, wd=0.05, length=36,
        batch=(2, 16), milestones=[27, 33], neck=[64, 128, 256, 512]),
    'mask_rcnn_msvmamba_n_1x': dict(arch='nano', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[48, 96, 192, 384]),
    'mask_rcnn_msvmamba_t_1x': dict(arch='tiny', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[96, 192, 384, 768]),
    'mask_rcnn_msvmamba_t_3x_ms': dict(arch='tiny', dpr=0.2, lr=0.0001, wd=0.05, length=36,
        batch=(2, 16), milestones=[27, 33], neck=[96, 192, 384, 768]),
    'mask_rcnn_vim_ti_1x': dict(arch='tiny', dpr=0.1, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=192),
    'mask_rcnn_vmamba_b_1x': dict(arch='base_s2l15', dpr=0.6, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[128, 256, 512, 1024]),
    'mask_rcnn_vmamba_s_1x': dict(arch='small_s2l15', dpr=0.3, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_s_3x_ms': dict(arch='small_s2l15', dpr=0.3, lr=0.0001, wd=0.05, length=36,
        batch=(2, 16), milestones=[27, 33], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_t_1x': dict(arch='tiny_s1l8', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_t_3x_ms': dict(arch='tiny_s1l8', dpr=0.2, lr=0.0001, wd=0.05, length=36,
        batch=(2, 16), milestones=[27, 33], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_t_s2l5_1x': dict(arch='tiny_s2l5', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_t_s2l5_3x_ms': dict(arch='tiny_s2l5', dpr=0.2, lr=0.0001, wd=0.05,
        length=36, batch=(2, 16), milestones=[27, 33], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_v0_b_1x': dict(arch='v0_base', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[128, 256, 512, 1024]),
    'mask_rcnn_vmamba_v0_s_1x': dict(arch='v0_small', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_v0_s_3x_ms': dict(arch='v0_small', dpr=0.2, lr=0.0001, wd=0.05, length=36,
        batch=(2, 16), milestones=[27, 33], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_v0_t_1x': dict(arch='v0_tiny', dpr=0.2, lr=0.0001, wd=0.05, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_v0_t_3x_ms': dict(arch='v0_tiny', dpr=0.2, lr=0.0001, wd=0.05, length=36,
        batch=(2, 16), milestones=[27, 33], neck=[96, 192, 384, 768]),
    'pspnet_mobilemamba_b4_80k_ade20k': dict(arch='b4', dpr=0.03, lr=0.00012, wd=0.05,
        length=80000, batch=(8, 32), clip=0.1, head=448),
    'retinanet_efficientvmamba_b_1x': dict(arch='base', dpr=0.2, lr=0.0001, wd=0.0001, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[192, 384, 768]),
    'retinanet_efficientvmamba_s_1x': dict(arch='small', dpr=0.2, lr=0.0001, wd=0.0001, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[128, 256, 512]),
    'retinanet_efficientvmamba_t_1x': dict(arch='tiny', dpr=0.2, lr=0.0001, wd=0.0001, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[96, 192, 384]),
    'retinanet_mobilemamba_b1_1x': dict(arch='b1', dpr=0.03, lr=0.0002, wd=0.05, length=12,
        batch=(4, 16), clip=0.1, neck=[200, 376, 448]),
    'retinanet_msvmamba_t_1x': dict(arch='tiny', dpr=0.2, lr=0.0001, wd=0.0001, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[192, 384, 768]),
    'retinanet_vim_ti_1x': dict(arch='tiny', dpr=0.1, lr=0.0001, wd=0.0001, length=12,
        batch=(2, 16), milestones=[8, 11], neck=192),
    'retinanet_vmamba_t_1x': dict(arch='tiny_s1l8', dpr=0.2, lr=0.0001, wd=0.0001, length=12,
        batch=(2, 16), milestones=[8, 11], neck=[192, 384, 768]),
    'ssdlite_mobilemamba_b1_320_coco': dict(arch='b1', dpr=0.03, lr=0.0024, wd=0.05, length=120,
        batch=(24, 192), clip=0.1, neck=(200, 376)),
    'ssdlite_mobilemamba_b1_512_coco': dict(arch='b1', dpr=0.03, lr=0.0024, wd=0.05, length=120,
        batch=(24, 192), clip=0.1, neck=(200, 376)),
    'upernet_efficientvmamba_b_160k_ade20k': dict(arch='base', dpr=0.2, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[96, 192, 384, 768]),
    'upernet_efficientvmamba_s_160k_ade20k': dict(arch='small', dpr=0.2, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[64, 128, 256, 512]),
    'upernet_efficientvmamba_t_160k_ade20k': dict(arch='tiny', dpr=0.2, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[48, 96, 192, 384]),
    'upernet_mobilemamba_b4_160k_ade20k': dict(arch='b4', dpr=0.03, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[200, 376, 448]),
    'upernet_msvmamba_m_160k_ade20k': dict(arch='micro', dpr=0.3, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[64, 128, 256, 512]),
    'upernet_msvmamba_n_160k_ade20k': dict(arch='nano', dpr=0.3, lr=6e-05, wd=0.01, length=160000,
        batch=(2, 16), head=[48, 96, 192, 384]),
    'upernet_msvmamba_t_160k_ade20k': dict(arch='tiny', dpr=0.2, lr=6e-05, wd=0.01, length=160000,
        batch=(2, 16), head=[96, 192, 384, 768]),
    'upernet_vim_s_60k_ade20k': dict(arch='small', dpr=0.1, lr=0.0001, wd=0.05, length=60000,
        batch=(8, 32), head=[384, 384, 384, 384]),
    'upernet_vim_ti_60k_ade20k': dict(arch='tiny', dpr=0.1, lr=0.0002, wd=0.1, length=60000,
        batch=(8, 32), head=[192, 192, 192, 192]),
    'upernet_vmamba_b_160k_ade20k': dict(arch='base_s2l15', dpr=0.6, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[128, 256, 512, 1024]),
    'upernet_vmamba_s_160k_ade20k': dict(arch='small_s2l15', dpr=0.3, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[96, 192, 384, 768]),
    'upernet_vmamba_t_160k_ade20k': dict(arch='tiny_s1l8', dpr=0.2, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[96, 192, 384, 768]),
    'upernet_vmamba_t_s2l5_160k_ade20k': dict(arch='tiny_s2l5', dpr=0.2, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[96, 192, 384, 768]),
    'upernet_vmamba_v0_b_160k_ade20k': dict(arch='v0_base', dpr=0.3, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[128, 256, 512, 1024]),
    'upernet_vmamba_v0_s_160k_ade20k': dict(arch='v0_small', dpr=0.3, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[96, 192, 384, 768]),
    'upernet_vmamba_v0_t_160k_ade20k': dict(arch='v0_tiny', dpr=0.3, lr=6e-05, wd=0.01,
        length=160000, batch=(2, 16), head=[96, 192, 384, 768]),
}


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_resolved_recipe(name):
    expect = dict(RECIPES[name])
    cfg = load_config(CONFIG_DIR / f'{name}.py')
    model, wrapper = cfg.model, cfg.optim_wrapper
    got = dict(arch=model.backbone.arch, dpr=model.backbone.get('drop_path_rate'),
               lr=wrapper.optimizer.lr, wd=wrapper.optimizer.weight_decay,
               length=cfg.train_cfg.get('max_epochs', cfg.train_cfg.get('max_iters')),
               batch=(cfg.train_dataloader.batch_size, cfg.auto_scale_lr.base_batch_size))
    if 'milestones' in expect:
        got['milestones'] = cfg.param_scheduler[-1].milestones
    if 'clip' in expect:
        got['clip'] = wrapper.clip_grad.max_norm
    else:
        assert wrapper.clip_grad is None, name
    got['wrapper'] = wrapper.type
    expect.setdefault('wrapper', 'OptimWrapper')
    if 'neck' in expect:
        got['neck'] = model.neck.in_channels
    if 'head' in expect:
        got['head'] = model.decode_head.in_channels
    assert got == expect
    assert tuple(wrapper.optimizer.betas) == (0.9, 0.999)
    assert set(RECIPES) == {p.stem for p in DOWNSTREAM_CONFIGS}


# Official recipes (shared/specs) of one config per family / model type.
SPOT_CHECKS = {
    'mask_rcnn_msvmamba_t_1x': dict(arch='tiny', drop_path_rate=0.2, lr=1e-4, weight_decay=0.05,
                                    length=12, milestones=[8, 11], batch=16,
                                    neck=[96, 192, 384, 768]),
    'mask_rcnn_vmamba_t_3x_ms': dict(arch='tiny_s1l8', drop_path_rate=0.2, lr=1e-4,
                                     weight_decay=0.05, length=36, milestones=[27, 33],
                                     batch=16, neck=[96, 192, 384, 768]),
    'upernet_vmamba_b_160k_ade20k': dict(arch='base_s2l15', drop_path_rate=0.6, lr=6e-5,
                                         weight_decay=0.01, length=160000, batch=16),
    'retinanet_efficientvmamba_s_1x': dict(arch='small', drop_path_rate=0.2, lr=1e-4,
                                           weight_decay=1e-4, length=12, milestones=[8, 11],
                                           batch=16, neck=[128, 256, 512]),
    'mask_rcnn_mobilemamba_b1_1x': dict(arch='b1', drop_path_rate=0.03, lr=2e-4,
                                        weight_decay=0.05, length=12, batch=16, clip=0.1,
                                        neck=[200, 376, 448]),
    'upernet_vim_ti_60k_ade20k': dict(arch='tiny', drop_path_rate=0.1, lr=2e-4,
                                      weight_decay=0.1, length=60000, batch=32),
}


@pytest.mark.parametrize('name', sorted(SPOT_CHECKS))
def test_official_recipe_values(name):
    expect = SPOT_CHECKS[name]
    cfg = load_config(CONFIG_DIR / f'{name}.py')
    backbone = cfg.model.backbone
    assert backbone.arch == expect['arch']
    assert backbone.drop_path_rate == expect['drop_path_rate']
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.weight_decay, tuple(opt.betas)) == (
        expect['lr'], expect['weight_decay'], (0.9, 0.999))
    assert cfg.train_cfg.get('max_epochs', cfg.train_cfg.get('max_iters')) == expect['length']
    if 'milestones' in expect:
        assert cfg.param_scheduler[-1].milestones == expect['milestones']
    assert cfg.auto_scale_lr.base_batch_size == expect['batch']
    if 'clip' in expect:
        assert cfg.optim_wrapper.clip_grad.max_norm == expect['clip']
    if 'neck' in expect:
        assert cfg.model.neck.in_channels == expect['neck']


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=lambda p: _rel(p).replace('/', '-'))
def test_config_builds(path):
    cfg = load_config(path)
    model = build_model(path)
    backbone = model.backbone
    assert isinstance(backbone, SSMBackbone) and type(backbone).__module__.startswith('mmssm.')
    # init_cfg (the official checkpoint) is kept for init_weights(), which is not run here
    assert backbone.init_cfg == cfg.model.backbone.get('init_cfg')
    outputs = backbone_outputs(backbone)
    size = 512
    if cfg.default_scope == 'mmdet':
        _check_detector(cfg, model, outputs, size)
    elif cfg.default_scope == 'mmseg':
        _check_segmentor(cfg, model, outputs, size)
    else:
        assert cfg.default_scope == 'mmpretrain'
        assert model.head.in_channels == backbone.out_channels[-1]


def _check_neck_in_channels(neck_cfg, outputs):
    channels = [c for c, _ in outputs]
    expected = neck_cfg.in_channels
    if isinstance(expected, int):  # single-map necks (SimpleFPN)
        assert expected == channels[neck_cfg.get('in_index', -1)]
    else:
        assert list(expected) == channels, (list(expected), channels)


def _neck_outputs(model, outputs, size):
    model.neck.eval()  # BatchNorm on 1x1 maps (SSDNeck's last level) needs eval mode
    with torch.no_grad():
        feats = model.neck(tuple(meta_features(outputs, size)))
    return [(f.shape[1], size / f.shape[-1]) for f in feats]


def _check_detector(cfg, model, outputs, size):
    _check_neck_in_channels(cfg.model.neck, outputs)
    levels = _neck_outputs(model, outputs, size)
    heads = [h for h in (getattr(model, 'rpn_head', None), getattr(model, 'bbox_head', None))
             if h is not None]
    assert heads
    for head in heads:
        in_channels = as_list(head.in_channels)
        if len(in_channels) == 1:
            in_channels *= len(levels)
        assert in_channels == [c for c, _ in levels], (in_channels, levels)
        strides = [s[0] if isinstance(s, tuple) else s for s in head.prior_generator.strides]
        measured = [s for _, s in levels]
        if type(head).__name__ == 'SSDHead':
            # SSDLite: the first three levels are exact; the last ones of the official
            # anchors (107, 160, 320) are only approximate (and 320-based for the 512 input)
            assert measured[:3] == strides[:3], (measured, strides)
        else:
            assert measured == strides, (measured, strides)
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is not None:
        extractors = [roi_head.bbox_roi_extractor, getattr(roi_head, 'mask_roi_extractor', None)]
        for extractor in extractors:
            for ex in as_list(extractor):
                if ex is None:
                    continue
                assert ex.featmap_strides == [s for _, s in levels][:len(ex.featmap_strides)]
                assert ex.out_channels == levels[0][0]


def _check_segmentor(cfg, model, outputs, size):
    if getattr(model, 'neck', None) is not None:
        _check_neck_in_channels(cfg.model.neck, outputs)
        feats = _neck_outputs(model, outputs, size)
    else:
        feats = outputs
    heads = [model.decode_head]
    if getattr(model, 'auxiliary_head', None) is not None:
        heads += as_list(model.auxiliary_head)
    for head in heads:
        index = as_list(head.in_index)
        assert as_list(head.in_channels) == [feats[i][0] for i in index], (
            type(head).__name__, head.in_channels, feats)
        if hasattr(head, 'feature_strides'):
            assert list(head.feature_strides) == [feats[i][1] for i in index]


def _tiny_backbones():
    return [
        dict(type='VMamba', arch=dict(depths=(1, 1, 1, 1), dims=8, d_state=1, ssm_ratio=1.0,
                                      mlp_ratio=2.0, gated=False, conv_bias=False,
                                      patch_embed='v2', downsample='v3')),
        dict(type='VMamba', arch=dict(depths=(1, 1, 1, 1), dims=8, d_state=2, ssm_ratio=2.0,
                                      mlp_ratio=0.0, gated=True, conv_bias=True,
                                      patch_embed='v1', downsample='v1'), out_indices=(1, 3)),
        dict(type='MSVMamba', arch=dict(dims=8, depths=(1, 1, 1, 1))),
        dict(type='EfficientVMamba', arch=dict(dims=8, depths=(1, 1, 1, 1))),
        dict(type='MobileMamba', arch=dict(embed_dims=[16, 32, 48], depths=[1, 1, 1])),
        dict(type='MobileMamba', arch=dict(embed_dims=[16, 32, 48], depths=[1, 1, 1]),
             out_indices=(0, 2)),
        dict(type='Vim', arch=dict(embed_dims=16, depth=2), img_size=64, out_indices=(0, 1),
             with_cls_token=False, with_fpn=True),
        dict(type='Vim', arch=dict(embed_dims=16, depth=2), img_size=64, out_indices=(1, ),
             with_cls_token=False),
    ]


@pytest.mark.parametrize('cfg', _tiny_backbones(), ids=lambda c: c['type'])
def test_backbone_output_rule(cfg):
    """The attribute rule used above agrees with a real forward (small archs, CPU)."""
    kwargs = dict(cfg)
    backbone = MMSSM_MODELS.get(kwargs.pop('type'))(**kwargs).eval()
    size = 64
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, size, size))
    measured = [(f.shape[1], size / f.shape[-1]) for f in feats]
    assert measured == [(c, float(s)) for c, s in backbone_outputs(backbone)]


# ------------------------------------------------------------------ metafiles and docs
def _metafile_models():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    models = {}
    for rel in index['Import']:
        meta = yaml.safe_load((ROOT / rel).read_text())
        collections = {c['Name'] for c in meta['Collections']}
        for model in meta['Models']:
            assert model['Name'] not in models, f'{model["Name"]} listed twice'
            assert model['In Collection'] in collections, model['Name']
            models[model['Name']] = model
    return models


def test_metafiles_cover_every_config():
    models = _metafile_models()
    assert set(models) == {p.stem for p in ZOO_CONFIGS}
    for name, model in models.items():
        path = ROOT / model['Config']
        assert path.is_file() and path.stem == name, model['Config']
        header = RESULT_RE.search(path.read_text()).group(1)
        status = model['Metadata']['Paper Result']
        assert status in ('reported', 'not reported by the paper'), (name, status)
        assert (status == 'reported') == (header == 'reported'), name
        results = model.get('Results') or []
        assert bool(results) == (status == 'reported'), name
        for result in results:
            assert result['Task'] and result['Dataset'] and result['Metrics'], name
            assert all(isinstance(v, (int, float)) for v in result['Metrics'].values()), name


def test_model_zoo_doc_lists_every_config():
    doc = (ROOT / 'docs' / 'model_zoo.md').read_text()
    missing = [p.stem for p in ZOO_CONFIGS if f'{p.stem}.py' not in doc]
    assert not missing, missing
