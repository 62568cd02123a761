"""Strict loading through a backbone's ``init_cfg=dict(type='Pretrained')`` (issue 11.2,
issue 13.4): differences stop the load unless declared; every config of configs/ loads
its official ImageNet checkpoint with what it declares, and only with that.

Official checkpoints are synthesized on the meta device from the keys files
(``keys_tsv``: the official backbone's state dict) in the layout the specifications give
for classification checkpoints: VMamba / MSVMamba / EfficientVMamba without ``outnorm*``
and with ``classifier.{norm,head}``; MobileMamba with its ``head.{bn,l}``; Vim as is.
"""
import copy
import glob
import os.path as osp
from collections import OrderedDict

import pytest
import torch
from conftest import REPO_ROOT, keys_tsv, parse_keys_tsv
from mmengine.config import Config

import mmssm.models  # noqa: F401  (registers the backbones)
from mmssm import families
from mmssm.converters import convert_official
from mmssm.loading import RULE_KEYS, IncompatibleCheckpointError, LoadRules
from mmssm.models.backbones.base import PRETRAINED_KEYS
from mmssm.registry import MODELS

# downstream configs (their backbone init_cfg); the ImageNet classifiers (cls_*) train from
# scratch and load official files whole through load_from (tests/test_cls_e2e.py)
CONFIGS = sorted(p for p in glob.glob(str(REPO_ROOT / 'configs' / '*.py'))
                 if not osp.basename(p).startswith('cls_'))
DECLARATIONS = set(RULE_KEYS + ('drop_classifier', )) - {'strict'}


def meta(*shape):
    return torch.empty(shape, device='meta')


def official_classification(family: str, arch: str) -> 'OrderedDict[str, torch.Tensor]':
    """An official ImageNet checkpoint's state dict (meta tensors) of ``family_arch``."""
    keys = parse_keys_tsv(keys_tsv(f'{family}_{arch}'))
    sd = OrderedDict((k, meta(*s)) for k, s in keys.items() if not k.startswith('outnorm'))
    if family in ('vmamba', 'msvmamba', 'efficientvmamba'):
        width = keys['outnorm3.weight'][0]
        sd.update({'classifier.norm.weight': meta(width), 'classifier.norm.bias': meta(width),
                   'classifier.head.weight': meta(1000, width),
                   'classifier.head.bias': meta(1000)})
    elif family == 'mobilemamba':
        width = [s for s in keys.values() if len(s) == 1][-1][0]
        sd.update({f'head.bn.{n}': meta(width)
                   for n in ('weight', 'bias', 'running_mean', 'running_var')})
        sd.update({'head.bn.num_batches_tracked': meta(), 'head.l.weight': meta(1000, width),
                   'head.l.bias': meta(1000)})
    return sd


@pytest.fixture
def fake_files(monkeypatch):
    """``init_cfg`` checkpoints served from memory: {path: contents}."""
    files = {}

    import contextlib

    import mmengine.fileio

    import mmssm.converters.base as base

    @contextlib.contextmanager
    def local_path(path, *args, **kwargs):
        yield path

    def load(path, trust_pickle=False, map_location='cpu'):
        return files[path]

    monkeypatch.setattr(mmengine.fileio, 'get_local_path', local_path)
    monkeypatch.setattr(base, 'load_checkpoint_file', load)
    return files


def backbone_of(config: str):
    """(family, backbone cfg without init_cfg, init_cfg) of a config."""
    cfg = copy.deepcopy(dict(Config.fromfile(config).model.backbone))
    init_cfg = cfg.pop('init_cfg')
    return families.find(cfg['type']).name, cfg, dict(init_cfg)


def build_meta(cfg, init_cfg=None):
    """Build on the meta device; ``type`` with its ``mmssm.`` scope, so that whatever
    default scope an earlier test left behind does not matter."""
    with torch.device('meta'):
        return MODELS.build(dict(cfg, init_cfg=init_cfg))


@pytest.mark.slow
@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_loads_its_official_imagenet_checkpoint(config, fake_files):
    family, cfg, init_cfg = backbone_of(config)
    assert init_cfg['type'] == 'Pretrained'
    fake_files[init_cfg['checkpoint']] = {'model': official_classification(family, cfg['arch'])}
    build_meta(cfg, init_cfg).init_weights()  # no flag: the config declares what differs


@pytest.mark.parametrize('config', [
    'upernet_vmamba_t_160k_ade20k', 'retinanet_msvmamba_t_1x', 'mask_rcnn_efficientvmamba_t_1x',
    'retinanet_mobilemamba_b1_1x', 'upernet_vim_s_60k_ade20k', 'mask_rcnn_vim_ti_1x'])
def test_each_declaration_is_needed(config, fake_files):
    """Undeclared, the official checkpoint is refused with the differences; without any
    one of the config's declarations it is refused too."""
    family, cfg, init_cfg = backbone_of(str(REPO_ROOT / 'configs' / f'{config}.py'))
    fake_files[init_cfg['checkpoint']] = {'model': official_classification(family, cfg['arch'])}
    with pytest.raises(IncompatibleCheckpointError) as info:
        build_meta(cfg, dict(type='Pretrained', checkpoint=init_cfg['checkpoint'])
                   ).init_weights()
    text = str(info.value)
    assert f"checkpoint {init_cfg['checkpoint']!r} does not fit" in text
    assert 'nothing was loaded' in text
    assert 'unexpected (' in text and 'removed by the' in text  # the ImageNet classifier
    assert 'drop_classifier=True' in text and 'allow_missing' in text  # how to accept
    declared = DECLARATIONS & set(init_cfg)
    assert declared
    for key in declared:
        reduced = {k: v for k, v in init_cfg.items() if k != key}
        with pytest.raises(IncompatibleCheckpointError):
            build_meta(cfg, reduced).init_weights()


def test_another_variant_is_refused(fake_files):
    """The issue's case: VMamba tiny_s2l5 weights into small_s2l15 used to load with a
    warning, leaving 180 of 406 entries random."""
    fake_files['t.pth'] = {'model': convert_official('vmamba', OrderedDict(
        (k, meta(*s)) for k, s in parse_keys_tsv(keys_tsv('vmamba_tiny_s2l5')).items()))}
    model = build_meta(dict(type='mmssm.VMamba', arch='small_s2l15'))
    with pytest.raises(IncompatibleCheckpointError,
                       match=r"180 missing \(.*226 of the model's 406 entries"):
        model.load_pretrained('t.pth')


def test_another_family_is_named(fake_files):
    """A checkpoint of another family is named as such, not listed as mismatches, even
    when many of its names exist in the model (MSVMamba and VMamba share most)."""
    msv = convert_official('msvmamba', OrderedDict(
        (k, meta(*s)) for k, s in parse_keys_tsv(keys_tsv('msvmamba_tiny')).items()))
    model = build_meta(dict(type='mmssm.VMamba', arch='tiny_s1l8'))
    assert len(set(msv) & set(model.state_dict())) > 50
    fake_files['msv.pth'] = {'state_dict': {f'backbone.{k}': v for k, v in msv.items()}}
    with pytest.raises(ValueError, match="looks like a 'msvmamba' checkpoint"):
        model.load_pretrained('msv.pth')


def test_declarations_accept_exactly_what_they_name(fake_files):
    fake_files['c.pth'] = {'model': official_classification('vmamba', 'tiny_s1l8')}
    cfg = dict(type='mmssm.VMamba', arch='tiny_s1l8')
    partly = dict(type='Pretrained', checkpoint='c.pth', drop_classifier=True,
                  allow_missing=['outnorm0.*', 'outnorm1.*'])
    with pytest.raises(IncompatibleCheckpointError) as info:
        build_meta(cfg, partly).init_weights()
    text = str(info.value)
    assert '4 missing (outnorm2.weight, outnorm2.bias, outnorm3.weight, outnorm3.bias)' in text
    assert 'unexpected' not in text.split('\n')[0]
    assert "Declared as deliberate (already accepted): allow_missing=['outnorm0.*'" in text
    build_meta(cfg, dict(partly, allow_missing='outnorm*')).init_weights()


def test_non_strict_loads_what_fits_and_warns(fake_files, caplog):
    sd = official_classification('vmamba', 'tiny_s1l8')
    fake_files['c.pth'] = {'model': sd}
    model = build_meta(dict(type='mmssm.VMamba', arch='tiny_s1l8'),
                       dict(type='Pretrained', checkpoint='c.pth', strict=False))
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine')  # print_log's 'current' logger
    report = model.load_pretrained('c.pth', strict=False)
    assert len(report['missing']) == 8 and len(report['unexpected']) == 4
    fake_files['nothing.pth'] = {'model': {'patch_embed.conv1.weight': meta(1, 1)}}
    with pytest.raises(IncompatibleCheckpointError, match='none of its 1 entries fits'):
        model.load_pretrained('nothing.pth', strict=False)


def test_pretrained_accepts_what_mmengine_accepts(fake_files):
    """prefix, map_location and revise_keys (mmengine's load_checkpoint renames)."""
    model = build_meta(dict(type='mmssm.VMamba', arch='tiny_s1l8'))
    renamed = OrderedDict((f'encoder.trunk.{k}', v) for k, v in model.state_dict().items())
    fake_files['r.pth'] = {'state_dict': renamed}
    init_cfg = dict(type='Pretrained', checkpoint='r.pth', map_location='cpu',
                    revise_keys=[(r'^encoder\.', ''), (r'^trunk\.', '')])
    build_meta(dict(type='mmssm.VMamba', arch='tiny_s1l8'), init_cfg).init_weights()
    build_meta(dict(type='mmssm.VMamba', arch='tiny_s1l8'),
               dict(type='Pretrained', checkpoint='r.pth', prefix='encoder.trunk.')
               ).init_weights()
    with pytest.raises(ValueError, match='does not look like'):  # keys not revised
        build_meta(dict(type='mmssm.VMamba', arch='tiny_s1l8'),
                   dict(type='Pretrained', checkpoint='r.pth')).init_weights()
    with pytest.raises(TypeError, match='revise_keys must be a list of'):
        build_meta(dict(type='mmssm.VMamba', arch='tiny_s1l8'),
                   dict(init_cfg, revise_keys=r'^encoder\.')).init_weights()
    with pytest.raises(ValueError, match="unsupported Pretrained keys \\['strcit'\\]"):
        build_meta(dict(type='mmssm.VMamba', arch='tiny_s1l8'),
                   dict(init_cfg, strcit=False)).init_weights()
    with pytest.raises(TypeError, match='allow_missing must be a pattern'):
        LoadRules.from_cfg(dict(allow_missing=[1]))
    assert set(PRETRAINED_KEYS) >= {'checkpoint', 'prefix', 'map_location', 'revise_keys'}
