"""Official ImageNet classifiers -> mmssm classifiers (mmpretrain ``ImageClassifier``).

Our classifier of each family is the backbone plus stock or mmssm mmpretrain parts:

=================  ============================================  =========================
family             official classifier                           ours
=================  ============================================  =========================
vmamba, msvmamba,  ``classifier`` = norm -> avg pool -> ``head``  backbone ``outnorm{last}``
efficientvmamba    (Linear) on the last stage                    (out_indices=(last,)) ->
                                                                 ``GlobalAveragePooling`` ->
                                                                 ``LinearClsHead`` (``fc``)
mobilemamba        avg pool -> ``head`` = BN_Linear (``bn``,      ``GlobalAveragePooling`` ->
                   ``l``) [+ ``head_dist``]                      ``MobileMambaClsHead``
vim                final norm -> middle class token -> ``head``  backbone
                                                                 ``out_type='cls_token'`` ->
                                                                 ``LinearClsHead``
=================  ============================================  =========================

so the parameters are the official ones, one for one. :func:`convert_classifier` maps an
official classification checkpoint onto that model (backbone tensors through the family
converter, under ``backbone.``; the head tensors per :data:`HEAD_RULES`);
:func:`classifier_from_official` builds the classifier from the official classification
model's constructor kwargs (and loads a state dict strictly).
"""
import re
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from mmssm import families

from .base import (_check_family, convert_official, get_converter, load_state_dict_checked,
                   official_backbone_state_dict)
from .checkpoint import extract_state_dict

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]

# ``{last}`` is the index of the last stage.
_NORM_POOL_LINEAR = (
    # official names, and the legacy top-level ``norm``/``head`` the official
    # ``VSSM._load_from_state_dict`` renames
    (re.compile(r'^(?:classifier\.)?norm\.'), 'backbone.outnorm{last}.'),
    (re.compile(r'^(?:classifier\.)?head\.'), 'head.fc.'),
)
HEAD_RULES: Dict[str, Tuple[Tuple['re.Pattern', str], ...]] = {
    'vmamba': _NORM_POOL_LINEAR,
    'msvmamba': _NORM_POOL_LINEAR,
    'efficientvmamba': _NORM_POOL_LINEAR,
    'mobilemamba': (
        (re.compile(r'^head\.bn\.'), 'head.bn.'),
        (re.compile(r'^head\.l\.'), 'head.fc.'),
        (re.compile(r'^head_dist\.bn\.'), 'head.dist_bn.'),
        (re.compile(r'^head_dist\.l\.'), 'head.dist_fc.'),
        (re.compile(r'^head\.(?=weight$|bias$)'), 'head.fc.'),  # BN-fused head
        (re.compile(r'^head_dist\.(?=weight$|bias$)'), 'head.dist_fc.'),
    ),
    'vim': ((re.compile(r'^head\.'), 'head.fc.'), ),
}
_STAGE_KEY = re.compile(r'^layers\.(\d+)\.')


def _last_stage(state_dict: Mapping[str, Any]) -> int:
    stages = {int(m.group(1)) for m in map(_STAGE_KEY.match, state_dict) if m}
    if not stages:
        raise ValueError('classification checkpoint without layers.<i>.* entries: cannot '
                         'tell which stage the classifier norm belongs to')
    return max(stages)


def split_classifier(family: str, state_dict: Mapping[str, Tensor]
                     ) -> Tuple[StateDict, 'OrderedDict[str, Tensor]']:
    """(official backbone entries, head entries under our classifier's names)."""
    if family not in HEAD_RULES:
        raise ValueError(f'no classification head rules for family {family!r}; expected one '
                         f'of {sorted(HEAD_RULES)}')
    rules = HEAD_RULES[family]
    backbone, head = OrderedDict(), OrderedDict()
    last = None
    for key, value in state_dict.items():
        for pattern, target in rules:
            match = pattern.match(key)
            if match:
                if '{last}' in target:
                    last = _last_stage(state_dict) if last is None else last
                    target = target.format(last=last)
                head[target + key[match.end():]] = value
                break
        else:
            backbone[key] = value
    return backbone, head


def convert_classifier(family: str, checkpoint: Any) -> 'OrderedDict[str, Tensor]':
    """Official classification checkpoint contents -> our classifier's state dict.

    Accepts what :func:`convert_official` accepts (a bare state dict or the whole file's
    contents). The result has ``backbone.*`` and ``head.*`` entries and loads strictly
    into the classifier of ``configs/cls_<family>_<variant>_in1k.py``. Raises if the
    checkpoint has no classifier (a backbone-only or downstream file).
    """
    state_dict = official_backbone_state_dict(family, checkpoint)
    _check_family(family, state_dict)
    trunk, head = split_classifier(family, state_dict)
    if not any(k.startswith('head.') for k in head):
        raise ValueError(f'this {family} checkpoint has no classification head (first keys: '
                         f'{", ".join(list(state_dict)[:4])}); it is a backbone or '
                         "downstream checkpoint: load it with the backbone's "
                         "init_cfg=dict(type='Pretrained', ...) instead")
    converted = OrderedDict(('backbone.' + k, v)
                            for k, v in convert_official(family, trunk).items())
    converted.update(head)
    return converted


# -------------------------------------------------------------- official kwargs -> ours
def _norm_pool_linear(family: str, config: Mapping[str, Any]) -> Tuple[dict, dict, dict]:
    config = dict(config)
    num_classes = int(config.pop('num_classes', 1000))
    kwargs = get_converter(family).kwargs_from_official(config)
    depths = kwargs['arch']['depths']
    kwargs['out_indices'] = (len(depths) - 1, )
    head = dict(type='LinearClsHead', num_classes=num_classes)
    return kwargs, dict(type='GlobalAveragePooling'), head


def _mobilemamba(config: Mapping[str, Any]) -> Tuple[dict, dict, dict]:
    config = dict(config)
    num_classes = int(config.pop('num_classes', 1000))
    distillation = bool(config.pop('distillation', False))
    kwargs = get_converter('mobilemamba').kwargs_from_official(config)
    kwargs['out_indices'] = (3, )
    head = dict(type='mmssm.MobileMambaClsHead', num_classes=num_classes,
                distillation=distillation)
    return kwargs, dict(type='GlobalAveragePooling'), head


def _vim(config: Mapping[str, Any]) -> Tuple[dict, dict, dict]:
    """``VisionMamba(**config)`` (vim/models_mamba.py): the classification class takes
    ``channels`` where the segmentation wrapper takes ``in_chans``."""
    config = dict(config)
    num_classes = int(config.pop('num_classes', 1000))
    if 'channels' in config:
        config['in_chans'] = config.pop('channels')
    if not config.get('if_cls_token', False) or not config.get('use_middle_cls_token',
                                                                False):
        raise NotImplementedError('Vim: only classifiers with a middle class token '
                                  '(if_cls_token=True, use_middle_cls_token=True; every '
                                  'released model) are supported')
    depth = int(config.get('depth', 24))
    # the wrapper options that make the backbone converter read the trunk only
    config.update(if_fpn=False, out_indices=(depth - 1, ), use_residual_as_feature=True,
                  last_layer_process='add & norm')
    kwargs = get_converter('vim').kwargs_from_official(config)
    kwargs.update(with_cls_token=True, out_type='cls_token', out_indices=-1)
    head = dict(type='LinearClsHead', num_classes=num_classes)
    return kwargs, None, head


KWARGS_FROM_OFFICIAL: Dict[str, Callable[[Mapping[str, Any]], Tuple[dict, Any, dict]]] = {
    'vmamba': lambda c: _norm_pool_linear('vmamba', c),
    'msvmamba': lambda c: _norm_pool_linear('msvmamba', c),
    'efficientvmamba': lambda c: _norm_pool_linear('efficientvmamba', c),
    'mobilemamba': _mobilemamba,
    'vim': _vim,
}


def classifier_config(family: str, config: Mapping[str, Any]) -> dict:
    """mmpretrain ``ImageClassifier`` config equal to the official classification model
    built with ``config`` (its constructor kwargs)."""
    if family not in KWARGS_FROM_OFFICIAL:
        raise ValueError(f'unknown family {family!r}; expected one of '
                         f'{sorted(KWARGS_FROM_OFFICIAL)}')
    backbone_kwargs, neck, head = KWARGS_FROM_OFFICIAL[family](config)
    backbone = dict(type='mmssm.' + families.get(family).backbone, **backbone_kwargs)
    head['in_channels'] = _last_width(backbone)
    return dict(type='mmpretrain.ImageClassifier', backbone=backbone, neck=neck, head=head)


def _last_width(backbone_cfg: dict) -> int:
    """Channels of the backbone's (last) output, read from a built backbone."""
    from mmssm.registry import MODELS
    with torch.device('meta'):
        module = MODELS.build(dict(backbone_cfg, init_cfg=None))
    return int(module.out_channels[-1])


def classifier_from_official(family: str, config: Mapping[str, Any],
                             state_dict: Optional[Any] = None) -> nn.Module:
    """Build our classifier from the official classification model's constructor kwargs
    (the fixtures' ``config``); with ``state_dict`` (official classification checkpoint
    contents) converted and loaded strictly. Returns the model in eval mode; calling it
    on an image batch (``mode='tensor'``) returns the official logits."""
    from mmengine.registry import DefaultScope

    from mmssm.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(classifier_config(family, config))
    if state_dict is not None:
        converted = convert_classifier(family, state_dict)
        backbone_sd = OrderedDict((k[len('backbone.'):], v) for k, v in converted.items()
                                  if k.startswith('backbone.'))
        prepare = get_converter(family).prepare_model
        if prepare is not None:
            backbone_sd = prepare(model.backbone, backbone_sd)
        head_sd = {k: v for k, v in converted.items() if k.startswith('head.')}
        if _is_fused_head(head_sd) and hasattr(model.head, 'switch_to_deploy'):
            model.head.switch_to_deploy()
        converted = OrderedDict(('backbone.' + k, v) for k, v in backbone_sd.items())
        converted.update(head_sd)
        load_state_dict_checked(model, converted, strict=True,
                                source=f'official {family} classification checkpoint')
    return model.eval()


def _is_fused_head(head_sd: Mapping[str, Tensor]) -> bool:
    return 'head.fc.weight' in head_sd and not any(k.startswith('head.bn.') for k in head_sd)


def looks_like_classifier(family: str, state_dict: Mapping[str, Any]) -> bool:
    """Whether an official state dict carries the family's classification head."""
    _, head = split_classifier(family, extract_state_dict(state_dict))
    return any(k.startswith('head.') for k in head)


__all__: List[str] = ['HEAD_RULES', 'classifier_config', 'classifier_from_official',
                      'convert_classifier', 'looks_like_classifier', 'split_classifier']
