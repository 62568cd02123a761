"""mmssm.engine: StrictLoadHook (strict load_from / --resume / tools/test.py) and the
tools' wiring of it (issue 11.2)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmssm.apis import strict_loading
from mmssm.engine import StrictLoadHook
from mmssm.loading import IncompatibleCheckpointError
from mmssm.models.backbones.msvmamba import MSVMamba
from mmssm.models.backbones.vmamba import VMamba
from mmssm.registry import HOOKS

TINY = dict(dims=16, depths=(1, 1, 1, 1))


class Detector(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(16, 4, 1)


def runner_for(model, path='work/iter_8.pth'):
    return SimpleNamespace(model=model, _load_from=path, _resume=False, work_dir='work')


def test_exact_checkpoint_passes_and_module_prefix_is_mmengines():
    model = Detector(MSVMamba(TINY))
    checkpoint = {'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()}}
    StrictLoadHook().after_load_checkpoint(runner_for(model), checkpoint)


def test_differences_are_refused_with_counts_names_and_the_way_out():
    model = Detector(MSVMamba(TINY))
    state = dict(model.state_dict())
    del state['head.weight'], state['head.bias']
    state['head.extra'] = torch.zeros(1)
    state['backbone.outnorm0.weight'] = torch.zeros(3)
    with pytest.raises(IncompatibleCheckpointError) as info:
        StrictLoadHook().after_load_checkpoint(runner_for(model), {'state_dict': state})
    text = str(info.value)
    assert "checkpoint 'work/iter_8.pth' does not fit Detector" in text
    assert '2 missing (head.weight, head.bias)' in text
    assert '1 unexpected (head.extra)' in text
    assert '1 mis-shaped (backbone.outnorm0.weight: checkpoint (3,) vs model (16,))' in text
    assert '--non-strict' in text and 'mmssm.StrictLoadHook' in text


def test_declared_differences_and_non_strict_are_accepted(caplog):
    model = Detector(MSVMamba(TINY))
    backbone_only = {f'backbone.{k}': v for k, v in model.backbone.state_dict().items()}
    hook = HOOKS.build(dict(type='mmssm.StrictLoadHook', allow_missing=['head.*']))
    hook.after_load_checkpoint(runner_for(model), {'state_dict': backbone_only})
    StrictLoadHook(strict=False).after_load_checkpoint(runner_for(model),
                                                       {'state_dict': backbone_only})


def test_another_family_is_named_first():
    model = Detector(MSVMamba(TINY))
    with torch.device('meta'):
        other = {f'backbone.{k}': v for k, v in VMamba('tiny_s1l8').state_dict().items()}
    with pytest.raises(IncompatibleCheckpointError) as info:
        StrictLoadHook().after_load_checkpoint(runner_for(model), {'state_dict': other})
    first = str(info.value).split('\n')[0]
    assert first == "This looks like a VMamba checkpoint; the model's backbone is MSVMamba."


def test_tools_add_the_hook_once_and_non_strict_relaxes_it():
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook')]))
    strict_loading(cfg)
    strict_loading(cfg)
    assert cfg.custom_hooks == [dict(type='EMAHook'), dict(type='mmssm.StrictLoadHook')]
    declared = Config(dict(custom_hooks=[dict(type='mmssm.StrictLoadHook',
                                              allow_missing=['neck.*'])]))
    strict_loading(declared, strict=False)
    assert declared.custom_hooks == [dict(type='mmssm.StrictLoadHook',
                                          allow_missing=['neck.*'], strict=False)]
    assert isinstance(HOOKS.build(declared.custom_hooks[0]), StrictLoadHook)
