"""The family registry (:mod:`mmssm.families`) and adding a family the documented way.

A toy sixth family (``tests/toyfamily``: its backbone and converter modules) is
registered with one :func:`mmssm.families.register` call, and then builds, converts,
loads official checkpoints through ``init_cfg`` and runs through the converter CLI and
the analysis tools without any other change to mmssm.
"""
import re

import pytest
import torch

from mmssm import families
from mmssm.apis import analysis
from mmssm.converters import convert_official, detect_families, from_official, get_converter
from mmssm.converters.cli import main as convert_cli
from mmssm.registry import MODELS

BUILTIN = ('vmamba', 'msvmamba', 'efficientvmamba', 'mobilemamba', 'vim')
TOY = families.Family('toymamba', 'ToyMamba', 'toyfamily.backbone', 'toyfamily.converter',
                      default_preset='nano')


@pytest.fixture
def toy_family():
    families.register(TOY)
    try:
        yield families.get('toymamba')
    finally:
        families.unregister('toymamba')


def to_official(state_dict):
    """Our ToyMamba keys -> the toy's official layout (plus a classifier)."""
    out = {}
    for key, value in state_dict.items():
        key = 'patch_embed.' + key[len('stem.'):] if key.startswith('stem.') else key
        out[re.sub(r'^stages\.', 'layers.', key)] = value.clone()
    out['head.weight'] = torch.randn(10, 16)
    return out


def assert_same_weights(model, expected):
    own = model.state_dict()
    assert set(own) == set(expected)
    for key, value in expected.items():
        assert torch.equal(own[key], value), key


def test_the_registry_knows_each_family_once():
    assert families.names() == BUILTIN
    for name in BUILTIN:
        family = families.get(name)
        cls = family.backbone_class()
        assert cls.__name__ == family.backbone and cls.family == name
        assert MODELS.get(family.backbone) is cls
        assert get_converter(name) is family.converter() and family.converter().name == name
        assert family.default_preset in family.presets
        for alias in (name, family.backbone, f'mmssm.{family.backbone}'):
            assert families.find(alias) is family
    assert families.find('SimpleFPN') is None
    assert [f for f in BUILTIN if families.get(f).size_argument] == ['vim']


def test_consumers_list_the_registry():
    import importlib.util
    from pathlib import Path
    tool = Path(__file__).resolve().parents[1] / 'tools' / 'model_converters' / \
        'official_to_mmssm.py'
    spec = importlib.util.spec_from_file_location('official_to_mmssm', tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    choices = next(a.choices for a in module.build_parser()._actions if a.dest == 'family')
    assert tuple(choices) == BUILTIN
    assert analysis.build_backbone is families.build_backbone


def test_the_registry_refuses_bad_entries():
    with pytest.raises(ValueError, match="unknown family 'nope'.*vmamba"):
        families.get('nope')
    with pytest.raises(KeyError, match='unknown backbone'):
        families.build_backbone('SimpleFPN')
    with pytest.raises(ValueError, match='clashes'):
        families.register(families.get('vim'))
    with pytest.raises(ValueError, match='clashes'):
        families.register(families.Family('vim2', 'Vim', 'a', 'b', 'tiny'))
    with pytest.raises(ValueError, match='lower-case'):
        families.register(families.Family('Vim2', 'Vim2', 'a', 'b', 'tiny'))
    with pytest.raises(TypeError, match='Family'):
        families.register(dict(name='vim2'))
    assert families.names() == BUILTIN
    crossed = families.Family('vim', 'Vim', 'mmssm.models.backbones.vim',
                              'mmssm.converters.vmamba', 'tiny')
    with pytest.raises(ImportError, match="converter of 'vmamba'"):
        crossed.converter()
    missing = families.Family('vim', 'NoSuchClass', 'mmssm.models.backbones.vim',
                              'mmssm.converters.vim', 'tiny')
    with pytest.raises(ImportError, match='NoSuchClass'):
        missing.backbone_class()


def test_a_sixth_family_is_one_register_call(toy_family, tmp_path):
    assert families.names() == BUILTIN + ('toymamba', )
    model = families.build_backbone('toymamba').eval()
    assert type(model) is toy_family.backbone_class() and toy_family.presets == ('nano', )
    outs = model(torch.randn(2, 3, 32, 48))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 8, 12), (2, 16, 4, 6)]
    assert MODELS.build(dict(type='mmssm.ToyMamba')).__class__ is type(model)
    assert analysis.build_backbone('ToyMamba', dict(dims=(4, 8), depths=(1, 2), d_state=1))

    # the family's converter: detection, conversion, classifier dropped
    official = to_official(model.state_dict())
    assert detect_families(official) == ['toymamba']
    assert_same_weights(model, convert_official('toymamba', official))
    # init_cfg=Pretrained reads an official file through the family registry
    path = tmp_path / 'official.pth'
    torch.save({'model': official}, path)
    loaded = MODELS.build(dict(type='mmssm.ToyMamba',
                               init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                             drop_classifier=True)))
    loaded.init_weights()
    assert_same_weights(loaded, model.state_dict())
    built = from_official('toymamba', dict(dims=[8, 16], depths=[1, 1]), official)
    assert_same_weights(built, model.state_dict())
    # the shared converter CLI
    dst = convert_cli('toymamba', [str(path), str(tmp_path / 'toy.pth')])
    assert_same_weights(model, torch.load(dst, weights_only=True)['state_dict'])
    # another family's checkpoint is refused by name
    vim_sd = families.build_backbone('vim', dict(embed_dims=32, depth=2),
                                     img_size=32).state_dict()
    with pytest.raises(ValueError, match="looks like a 'vim' checkpoint"):
        convert_official('toymamba', vim_sd)
