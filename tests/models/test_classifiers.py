"""ImageNet classifiers: official parity, checkpoint conversion with heads, the heads.

* ``from_official(family, config, state_dict, task='cls')`` builds our mmpretrain
  ``ImageClassifier`` from the official classification model's kwargs and returns the
  official logits on every case of ``tests/data/<family>/cls_fixture.pt``
  (float32, ``atol = rtol = 1e-4`` as the fixtures suggest).
* ``convert_classifier`` keeps every official tensor (one for one) and refuses files
  without a classifier or of another family.
* ``MobileMambaClsHead``: BN fusion, the distillation head, clear errors.
"""
import functools
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmpretrain', exc_type=ImportError)  # absent or refused

from mmssm.converters import from_official  # noqa: E402
from mmssm.converters.classification import (classifier_config,  # noqa: E402
                                             convert_classifier, split_classifier)
from mmssm.registry import MODELS  # noqa: E402

from conftest import official_cpu_merge  # noqa: E402  (tests/models/conftest.py)

DATA = Path(__file__).resolve().parents[1] / 'data' / 'fixtures'
FAMILIES = ('vmamba', 'msvmamba', 'efficientvmamba', 'mobilemamba', 'vim')


@functools.lru_cache(maxsize=None)
def cls_fixture(family):
    return torch.load(DATA / family / 'cls_fixture.pt', map_location='cpu', weights_only=True)


def fixture_cases():
    for family in FAMILIES:
        for index, _ in enumerate(cls_fixture(family)['cases']):
            yield pytest.param(family, index, id=f'{family}-{index}')


def reference_classifier(family, config, state_dict):
    """``from_official(task='cls')`` configured like the run that produced the official
    logits (MobileMamba: the official CPU merge quirk, see conftest)."""
    model = from_official(family, config, state_dict, task='cls')
    return official_cpu_merge(model) if family == 'mobilemamba' else model


@functools.lru_cache(maxsize=None)
def official_classifier(family, index):
    fixture = cls_fixture(family)
    case = fixture['cases'][index]
    if 'state_dict' in case:
        return reference_classifier(family, case['config'], case['state_dict'])
    return shared_classifier(family)


@functools.lru_cache(maxsize=None)
def shared_classifier(family):
    fixture = cls_fixture(family)
    return reference_classifier(family, fixture['config'], fixture['state_dict'])


@pytest.mark.parametrize('family,index', list(fixture_cases()))
def test_logits_match_the_official_classifier(family, index):
    case = cls_fixture(family)['cases'][index]
    model = official_classifier(family, index)
    assert not model.training
    with torch.no_grad():
        logits = model(case['input'])
    expected = case['outputs'][0]
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits.double(), case['outputs_fp64'][0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('family', FAMILIES)
def test_conversion_keeps_every_official_tensor(family):
    fixture = cls_fixture(family)
    official = fixture['state_dict']
    converted = convert_classifier(family, {'model': official})
    assert len(converted) == len(official)
    assert sum(v.numel() for v in converted.values()) == sum(
        v.numel() for v in official.values())
    assert all(k.startswith(('backbone.', 'head.')) for k in converted)
    model = shared_classifier(family)
    own = model.state_dict()
    assert set(converted) == set(own)
    assert all(own[k].shape == v.shape for k, v in converted.items())


def test_classifier_parts_are_the_official_ones():
    """The VMamba-style norm is the backbone's last out-norm; Vim reads the class token."""
    _, head = split_classifier('vmamba', cls_fixture('vmamba')['state_dict'])
    assert sorted(head) == ['backbone.outnorm3.bias', 'backbone.outnorm3.weight',
                            'head.fc.bias', 'head.fc.weight']
    cfg = classifier_config('vim', cls_fixture('vim')['config'])
    assert cfg['neck'] is None and cfg['backbone']['out_type'] == 'cls_token'
    assert cfg['head'] == dict(type='LinearClsHead', num_classes=10, in_channels=32)
    cfg = classifier_config('mobilemamba', cls_fixture('mobilemamba')['config'])
    assert cfg['head']['type'] == 'mmssm.MobileMambaClsHead'
    assert cfg['backbone']['out_indices'] == (3, ) and cfg['head']['in_channels'] == 64


def test_backbone_only_and_wrong_family_checkpoints_are_refused():
    official = cls_fixture('vmamba')['state_dict']
    trunk = {k: v for k, v in official.items() if not k.startswith('classifier.')}
    with pytest.raises(ValueError, match='no classification head'):
        convert_classifier('vmamba', trunk)
    with pytest.raises(ValueError, match="looks like a 'vmamba' checkpoint"):
        convert_classifier('vim', official)
    with pytest.raises(ValueError, match="task must be 'backbone' or 'cls'"):
        from_official('vmamba', cls_fixture('vmamba')['config'], task='det')


def _official_fused_head(state_dict, prefix):
    """The official ``BN_Linear.fuse``: W' = W s, b' = W (beta - mu s) + b."""
    eps = 1e-5
    scale = state_dict[prefix + 'bn.weight'] / torch.sqrt(
        state_dict[prefix + 'bn.running_var'] + eps)
    shift = state_dict[prefix + 'bn.bias'] - state_dict[prefix + 'bn.running_mean'] * scale
    weight = state_dict[prefix + 'l.weight']
    return weight * scale[None], weight @ shift + state_dict[prefix + 'l.bias']


def test_mobilemamba_fused_head_checkpoint_loads():
    fixture = cls_fixture('mobilemamba')
    case = fixture['cases'][3]  # distillation head
    official = dict(case['state_dict'])
    for prefix in ('head.', 'head_dist.'):
        weight, bias = _official_fused_head(official, prefix)
        for key in [k for k in official if k.startswith(prefix)]:
            del official[key]
        official[prefix + 'weight'], official[prefix + 'bias'] = weight, bias
    model = reference_classifier('mobilemamba', case['config'], official)
    assert model.head.deploy and isinstance(model.head.bn, torch.nn.Identity)
    with torch.no_grad():
        logits = model(case['input'])
    torch.testing.assert_close(logits, case['outputs'][0], atol=1e-4, rtol=1e-4)


def build_head(**kwargs):
    """As an mmpretrain config builds it (default scope mmpretrain: its losses)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(type='mmssm.MobileMambaClsHead', **kwargs))


def test_mobilemamba_head_switch_to_deploy_and_errors():
    torch.manual_seed(0)
    head = build_head(num_classes=5, in_channels=8, distillation=True)
    for bn in (head.bn, head.dist_bn):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    head.eval()
    feats = (torch.randn(3, 8), )
    with torch.no_grad():
        before = head(feats)
        after = head.switch_to_deploy()(feats)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)
    assert head.switch_to_deploy() is head
    with pytest.raises(ValueError, match=r'pooled features \(B, 8\)'):
        head((torch.randn(3, 8, 2, 2), ))
    head.train()
    with pytest.raises(NotImplementedError, match='distillation=False to train'):
        head(feats)
    with pytest.raises(ValueError, match='num_classes must be a positive int'):
        build_head(num_classes=0, in_channels=8)
