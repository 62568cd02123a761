"""The ImageNet classification configs ``configs/cls_<family>_<variant>_in1k.py``.

* One config per released classification checkpoint, named like the downstream configs.
* Each states its recipe: header (paper result, official config and checkpoint); the
  shared recipe ``configs/_base_/imagenet_swin_300e.py`` inherits mmpretrain's ImageNet
  bases, each family's first classifier inherits it and every variant its sibling, stating
  only what differs; the resolved hyper-parameters are the official ones (tables below,
  from shared/specs and the official repositories).
* Parameters of every classifier equal the official classification model's (metafile).
* ``get_flops.py`` on a classifier is within 2 % of the paper's FLOPs (a cheap subset
  here, ``slow``; the full table is in docs/model_zoo.md).
"""
import ast
import functools
import re
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip('mmpretrain')

import mmssm  # noqa: E402,F401  (compat shims first)
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from mmssm.apis.analysis import count_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs'
CLS_CONFIGS = sorted(CONFIG_DIR.glob('cls_*_in1k.py'))
NAME_RE = re.compile(r'^cls_(vmamba|msvmamba|efficientvmamba|mobilemamba|vim)_([a-z0-9_]+)_in1k$')
BATCH_RE = re.compile(r'^# Total batch: (\d+) = (\d+) images/GPU x (\d+) GPUs', re.M)
MMPRETRAIN_BASES = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]

# Every released ImageNet-1K classifier (issue 13), as configs.
RELEASED = {
    'vmamba': ('t', 't_s2l5', 's', 'b', 's_s1l20', 'b_s1l20', 'v0_t', 'v0_s', 'v0_b'),
    'msvmamba': ('n', 'm', 't'),
    'efficientvmamba': ('t', 's', 'b'),
    'mobilemamba': ('t2', 't4', 's6', 'b1', 'b2', 'b4'),
    'vim': ('ti', 's', 'b', 'ti_stride8', 's_stride8'),
}

# Official recipes of every classifier: arch, drop path, lr, weight decay, epochs, total
# batch, EMA momentum (None: no EMA), mixup alpha, eval resize (short side) / crop.
RECIPES = {
    'cls_vmamba_t_in1k': ('tiny_s1l8', 0.2, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_vmamba_t_s2l5_in1k': ('tiny_s2l5', 0.2, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_vmamba_s_in1k': ('small_s2l15', 0.3, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_vmamba_b_in1k': ('base_s2l15', 0.6, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_vmamba_s_s1l20_in1k': ('small_s1l20', 0.3, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256,
                                224),
    'cls_vmamba_b_s1l20_in1k': ('base_s1l20', 0.5, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_vmamba_v0_t_in1k': ('v0_tiny', 0.2, 1e-3, 0.05, 300, 1024, None, 0.8, 256, 224),
    'cls_vmamba_v0_s_in1k': ('v0_small', 0.3, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_vmamba_v0_b_in1k': ('v0_base', 0.5, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_msvmamba_n_in1k': ('nano', 0.2, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_msvmamba_m_in1k': ('micro', 0.2, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_msvmamba_t_in1k': ('tiny', 0.2, 1e-3, 0.05, 300, 1024, 1e-4, 0.8, 256, 224),
    'cls_efficientvmamba_t_in1k': ('tiny', 0.1, 2e-3, 0.04, 300, 2048, 1e-4, 0.2, 256, 224),
    'cls_efficientvmamba_s_in1k': ('small', 0.1, 2e-3, 0.04, 300, 2048, 1e-4, 0.2, 256, 224),
    'cls_efficientvmamba_b_in1k': ('base', 0.1, 2e-3, 0.04, 300, 1024, 1e-4, 0.2, 256, 224),
    'cls_mobilemamba_t2_in1k': ('t2', 0.0, 3e-3, 0.05, 300, 1024, 2e-4, 0.8, 219, 192),
    'cls_mobilemamba_t4_in1k': ('t4', 0.0, 3e-3, 0.05, 300, 1024, 2e-4, 0.8, 219, 192),
    'cls_mobilemamba_s6_in1k': ('s6', 0.0, 3e-3, 0.05, 300, 1024, 2e-4, 0.8, 256, 224),
    'cls_mobilemamba_b1_in1k': ('b1', 0.03, 3e-3, 0.05, 300, 1024, 2e-4, 0.8, 292, 256),
    'cls_mobilemamba_b2_in1k': ('b2', 0.03, 3e-3, 0.05, 300, 1024, 2e-4, 0.8, 438, 384),
    'cls_mobilemamba_b4_in1k': ('b4', 0.03, 3e-3, 0.05, 300, 1024, 2e-4, 0.8, 585, 512),
    'cls_vim_ti_in1k': ('tiny', 0.0, 1e-3, 0.1, 300, 1024, 4e-5, 0.8, 256, 224),
    'cls_vim_s_in1k': ('small', 0.05, 1e-3, 0.05, 300, 512, 4e-5, 0.8, 256, 224),
    'cls_vim_b_in1k': ('base', 0.1, 1e-3, 0.05, 300, 1024, 4e-5, 0.8, 256, 224),
    'cls_vim_ti_stride8_in1k': ('tiny_stride8', 0.0, 1e-5, 1e-8, 30, 1024, 4e-5, 0.8, 256,
                                224),
    'cls_vim_s_stride8_in1k': ('small_stride8', 0.0, 1e-5, 1e-8, 30, 1024, 4e-5, 0.8, 256,
                               224),
}
# Schedules and optimizer wrappers, per family (the stride-8 Vims fine-tune): warm-up epochs,
# warm-up start factor, min lr, per-iteration scheduling, grad-norm clip (None: none), AMP,
# DeiT repeated augmentation (repeats), validation batch.
SCHEDULES = {
    'vmamba': (20, 1e-3, 1e-5, True, 5.0, False, None, 128),
    'msvmamba': (20, 1e-3, 1e-5, True, 5.0, False, None, 128),
    'efficientvmamba': (20, 5e-5, 1e-6, True, 1.0, True, None, 128),
    'mobilemamba': (20, 1e-3, 3e-5, True, 5.0, True, None, 125),
    'vim': (5, 1e-3, 1e-5, False, None, False, 3, 128),
    'vim_stride8': (5, 1.0, 1e-5, False, None, False, 3, 128),
}
SHARED_RECIPE = CONFIG_DIR / '_base_' / 'imagenet_swin_300e.py'


@functools.lru_cache(maxsize=None)
def load(path: Path) -> Config:
    return Config.fromfile(str(path))


@functools.lru_cache(maxsize=None)
def metafile_models() -> dict:
    models = {}
    for path in CONFIG_DIR.glob('metafile_*.yml'):
        for model in yaml.safe_load(path.read_text())['Models']:
            models[model['Name']] = model
    return models


def bases_of(path: Path) -> list:
    text = path.read_text()
    return ast.literal_eval(re.search(r'^_base_ = (\[.*?\])', text, re.M | re.S).group(1))


def inheritance_chain(path: Path) -> list:
    """The config and its local bases, nearest first."""
    chain = [path]
    while True:
        local = [b for b in bases_of(chain[-1]) if b.startswith('./')]
        if not local:
            return chain
        chain.append(CONFIG_DIR / local[0])


def build(cfg: Config):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def test_every_released_classifier_has_a_config():
    names = {p.stem for p in CLS_CONFIGS}
    expected = {f'cls_{family}_{variant}_in1k' for family, variants in RELEASED.items()
                for variant in variants}
    assert names == expected


@pytest.mark.parametrize('path', CLS_CONFIGS, ids=lambda p: p.stem)
def test_config_states_its_recipe(path):
    text = path.read_text()
    assert NAME_RE.match(path.stem)
    for line in ('# Paper result: reported -- top-1 ', '# Official config: ',
                 '# Official checkpoint: ', f'python tools/test.py configs/{path.name} '):
        assert line in text, f'{path.name}: header misses {line!r}'
    bases = bases_of(path)
    assert len(bases) == 1
    if bases[0] == './_base_/imagenet_swin_300e.py':  # a family's first classifier
        assert re.search(r'^model = dict\(\n    backbone=dict\(\n        type=', text, re.M)
    else:  # a variant: its sibling, stating only what differs
        assert re.fullmatch(r'\./cls_[a-z0-9_]+_in1k\.py', bases[0])
        assert (CONFIG_DIR / bases[0]).is_file()
    cfg = load(path)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports == dict(imports=['mmssm'], allow_failed_imports=False)
    assert cfg.model.backbone.type.startswith('mmssm.')
    assert 'init_cfg' not in cfg.model  # a model-level init would be the backbone's business
    # the loaders use the stated pipelines; batch = "Total batch" comment = auto_scale_lr
    assert cfg.train_dataloader.dataset.pipeline == cfg.train_pipeline
    assert cfg.test_dataloader.dataset.pipeline == cfg.test_pipeline
    assert cfg.val_dataloader.dataset.pipeline == cfg.test_pipeline
    match = None
    for candidate in inheritance_chain(path):  # the nearest statement wins
        match = match or BATCH_RE.search(candidate.read_text())
    assert match, f'{path.name}: no "# Total batch" comment in it or its bases'
    total, per_gpu, gpus = map(int, match.groups())
    assert total == per_gpu * gpus == cfg.auto_scale_lr.base_batch_size
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.auto_scale_lr.enable is False
    schedule = cfg.param_scheduler
    assert schedule[-1]['end'] == cfg.train_cfg.max_epochs
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.paramwise_cfg.flat_decay_mult == 0.0


def test_shared_recipe_states_itself():
    """The recipe the families' first classifiers inherit: mmpretrain's ImageNet bases,
    every part of the recipe stated in the file, no backbone of its own."""
    text = SHARED_RECIPE.read_text()
    assert bases_of(SHARED_RECIPE) == MMPRETRAIN_BASES
    for key in ('train_pipeline', 'test_pipeline', 'optim_wrapper', 'param_scheduler',
                'train_cfg', 'custom_hooks', 'auto_scale_lr'):
        assert re.search(rf'^{key} = ', text, re.M), f'{key} not stated'
    assert 'backbone' not in Config.fromfile(str(SHARED_RECIPE)).model


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_official_recipe_values(name):
    arch, drop_path, lr, wd, epochs, batch, ema, mixup, resize, crop = RECIPES[name]
    cfg = load(CONFIG_DIR / f'{name}.py')
    assert cfg.model.backbone.arch == arch
    assert cfg.model.backbone.drop_path_rate == drop_path
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.weight_decay, tuple(opt.betas), opt.eps) == (lr, wd, (0.9, 0.999),
                                                                      1e-8)
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.auto_scale_lr.base_batch_size == batch
    hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] == 'EMAHook']
    assert [h['momentum'] for h in hooks] == ([] if ema is None else [ema])
    assert cfg.model.train_cfg.augments[0] == dict(type='Mixup', alpha=mixup)
    assert cfg.model.train_cfg.augments[1] == dict(type='CutMix', alpha=1.0)
    steps = {t['type']: t for t in cfg.test_pipeline}
    assert steps['ResizeEdge']['scale'] == resize and steps['ResizeEdge']['edge'] == 'short'
    assert steps['ResizeEdge']['interpolation'] == 'bicubic'
    assert steps['CenterCrop']['crop_size'] == crop
    train = {t['type']: t for t in cfg.train_pipeline}
    assert train['RandomResizedCrop']['scale'] == crop
    assert train['RandomErasing']['erase_prob'] == 0.25
    family = NAME_RE.match(name).group(1)
    warmup, start, eta_min, per_iter, clip, amp, repeats, val_batch = SCHEDULES[
        'vim_stride8' if family == 'vim' and 'stride8' in name else family]
    linear, cosine = cfg.param_scheduler
    assert (linear.type, linear.begin, linear.end, linear.start_factor) == ('LinearLR', 0,
                                                                            warmup, start)
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == ('CosineAnnealingLR',
                                                                       warmup, epochs, eta_min)
    assert [s.get('convert_to_iter_based', False) for s in cfg.param_scheduler] == [per_iter] * 2
    wrapper = cfg.optim_wrapper
    assert (wrapper.clip_grad or {}).get('max_norm') == clip
    assert wrapper.type == ('AmpOptimWrapper' if amp else 'OptimWrapper')
    sampler = cfg.train_dataloader.sampler
    assert sampler.get('num_repeats') == repeats
    assert sampler.type == ('RepeatAugSampler' if repeats else 'DefaultSampler')
    assert cfg.val_dataloader.batch_size == cfg.test_dataloader.batch_size == val_batch


@pytest.mark.parametrize('path', CLS_CONFIGS, ids=lambda p: p.stem)
def test_params_equal_the_official_classifier(path):
    meta = metafile_models()[path.stem]
    assert meta['Config'] == f'configs/{path.name}'
    model = build(load(path))
    # counted as the official repositories do (MobileMamba's Haar filter buffers are
    # frozen parameters there)
    assert count_params(model) == meta['Metadata']['Parameters']
    assert model.head.in_channels == model.backbone.out_channels[-1]
    assert meta['Results'][0]['Metrics']['Top 1 Accuracy'] > 70


def _flops(text: str) -> float:
    value, unit = re.fullmatch(r'([\d.]+)([MG])', text).groups()
    return float(value) * {'M': 1e6, 'G': 1e9}[unit]


# cheap on a CPU; the others were measured for docs/model_zoo.md
FLOPS_CHECKED = ('cls_efficientvmamba_t_in1k', 'cls_mobilemamba_t2_in1k',
                 'cls_msvmamba_n_in1k')


@pytest.mark.slow
@pytest.mark.parametrize('name', FLOPS_CHECKED)
def test_get_flops_matches_the_paper(name, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'mmssm_get_flops', ROOT / 'tools' / 'analysis_tools' / 'get_flops.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result, params = tool.main([str(CONFIG_DIR / f'{name}.py')])
    finally:
        torch.set_num_threads(threads)
    meta = metafile_models()[name]['Metadata']
    assert params == meta['Parameters']
    paper = _flops(meta['FLOPs'])
    assert abs(result['flops'] - paper) / paper < 0.02, (result['flops'], paper)
    assert f"Input shape: (1, 3, {meta['Input Size']}, {meta['Input Size']})" in (
        capsys.readouterr().out)
