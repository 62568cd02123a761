"""MobileMamba: official checkpoints/configs -> :class:`mmssm.models.MobileMamba`.

Key names are the official ones except the squeeze-excitation of the downsampling units,
which is mmssm's shared ``SqueezeExcite`` (``se.fc1``/``se.fc2`` ->
``se.conv_reduce``/``se.conv_expand``), so conversion is: select the weights, drop the
classifier (``head.*``, ``head_dist.*``), rename the SE, and check the BN layout. Two
layouts exist:

* unfused (all released checkpoints): ``X.c.weight`` + ``X.bn.*`` per Conv2d_BN,
  ``local_op.{dwconv3x3,bn1,dwconv1x1,bn2}.*``;
* fused (written after the official BN fusion, or by our ``switch_to_deploy``):
  ``X.weight`` + ``X.bias``, ``local_op.{0,2}.{weight,bias}``.

Loading reconciles the two (:func:`prepare_model`, used by ``from_official`` and
``init_cfg=dict(type='Pretrained')``): a fused checkpoint switches an unfused model to
its deploy layout first (``MobileMamba.switch_to_deploy``; a model built with
``deploy=True`` takes it directly), and an unfused checkpoint loaded into a deployed
model is fused on the fly (:func:`fuse_state_dict`). A half-fused state dict is an
error.

Official trainer checkpoints nest the weights under ``net`` and the EMA weights under
``net_E``; ``net`` is the default, ``select_weights(ckpt, ema=True)`` / the CLI's
``--key net_E`` / ``MobileMamba.load_pretrained(..., key='net_E')`` pick the EMA ones.
"""
import re
from collections import OrderedDict
from typing import Any, Dict, Mapping

import torch

from mmssm.models.backbones.mobilemamba import BN_EPS, fuse_conv_bn_weights

from .base import FamilyConverter
from .checkpoint import extract_state_dict

Tensor = torch.Tensor

CLASSIFIER_PREFIXES = ('head.', 'head_dist.')
_BN_FIELDS = ('weight', 'bias', 'running_mean', 'running_var')
_MRFFI_RE = re.compile(r'^blocks[123]\.\d+\.mixer\.m\.attn\.(global_op|local_op)\.')
# The official SE's fc1/fc2 -> mmssm's SqueezeExcite conv_reduce/conv_expand.
_SE_NAME = re.compile(r'\.se\.(fc1|fc2)\.')
_SE_NAMES = {'fc1': 'conv_reduce', 'fc2': 'conv_expand'}


def select_weights(checkpoint: Any, ema: bool = False) -> 'OrderedDict[str, Tensor]':
    """The weights inside an official checkpoint: ``net`` (default) or, with ``ema``,
    ``net_E``; a flat state dict is returned as is (``ema`` then is an error)."""
    if ema:
        return extract_state_dict(checkpoint, 'net_E')
    if isinstance(checkpoint, Mapping) and 'net' in checkpoint:
        return extract_state_dict(checkpoint, 'net')
    return extract_state_dict(checkpoint)


def signature(state_dict: Mapping[str, Tensor]) -> bool:
    """True for MobileMamba backbone weights (official = mmssm naming, fused or not):
    the MRFFI mixer's ``global_op``/``local_op`` exist in no other family."""
    return any(_MRFFI_RE.match(k) for k in state_dict)


def _unfused_sites(state_dict: Mapping[str, Tensor]):
    """Conv2d_BN prefixes ``X`` (``X.c.weight``) and MK-DeConv prefixes ``L``."""
    convs = [k[:-len('.c.weight')] for k in state_dict if k.endswith('.c.weight')]
    local = [k[:-len('.dwconv3x3.weight')] for k in state_dict
             if k.endswith('.local_op.dwconv3x3.weight')]
    return convs, local


def is_fused(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether ``state_dict`` has the BN-fused layout; a mixture raises ``ValueError``."""
    convs, local = _unfused_sites(state_dict)
    fused_markers = [k for k in state_dict
                     if k == 'patch_embed.0.weight' or k.endswith('.local_op.0.weight')
                     or re.search(r'\.(in_proj|out_proj|proj\.1|pw1|pw2|conv[123])\.weight$', k)]
    if (convs or local) and fused_markers:
        raise ValueError(
            'MobileMamba state dict mixes the BN-fused layout (e.g. '
            f'{fused_markers[0]!r}) with the unfused one (e.g. '
            f'{(convs or local)[0]!r}.*); expected all Conv2d_BN units fused or none')
    return bool(fused_markers)


def fuse_state_dict(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Unfused -> fused layout, computed like ``MobileMamba.switch_to_deploy``
    (BN eps 1e-5, as in every official Conv2d_BN). Key order is kept."""
    convs, local = _unfused_sites(state_dict)
    # conv weight key -> (bn prefix, new prefix); BN keys of these sites are consumed.
    pairs = {f'{p}.c.weight': (f'{p}.bn', p) for p in convs}
    for p in local:
        pairs[f'{p}.dwconv3x3.weight'] = (f'{p}.bn1', f'{p}.0')
        pairs[f'{p}.dwconv1x1.weight'] = (f'{p}.bn2', f'{p}.2')
    consumed = set()
    for bn, _ in pairs.values():
        consumed.update(f'{bn}.{f}' for f in _BN_FIELDS + ('num_batches_tracked', ))
    out = OrderedDict()
    for key, value in state_dict.items():
        if key in pairs:
            bn, target = pairs[key]
            missing = [f'{bn}.{f}' for f in _BN_FIELDS if f'{bn}.{f}' not in state_dict]
            if missing:
                raise KeyError(f'cannot fuse {key!r}: missing {missing}')
            weight, bias = fuse_conv_bn_weights(
                value, *(state_dict[f'{bn}.{f}'] for f in _BN_FIELDS), eps=BN_EPS)
            out[f'{target}.weight'] = weight
            out[f'{target}.bias'] = bias
        elif key not in consumed:
            out[key] = value
    return out


def convert(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Official backbone state dict (classifier possibly present) -> ours."""
    is_fused(state_dict)  # rejects half-fused dicts
    return OrderedDict((_SE_NAME.sub(lambda m: f'.se.{_SE_NAMES[m.group(1)]}.', k), v)
                       for k, v in state_dict.items()
                       if not k.startswith(CLASSIFIER_PREFIXES))


def prepare_model(model: torch.nn.Module,
                  state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Reconcile BN layouts right before loading (see the module docstring)."""
    state_dict = convert(state_dict)
    fused = is_fused(state_dict)
    deployed = getattr(model, 'deploy', False)
    if fused and not deployed:
        model.switch_to_deploy()
    elif deployed and not fused:
        state_dict = fuse_state_dict(state_dict)
    return state_dict


# Official MobileMamba constructor arguments that have exactly one supported value.
_FIXED = {
    'stages': ['s', 's', 's'],
    'down_ops': [['subsample', 2], ['subsample', 2], ['']],
    'forward_type': 'v052d',
    'sync_bn': False,
}
# Accepted and without effect in the official downstream wrapper.
_IGNORED = ('img_size', 'num_classes', 'distillation')
_KNOWN = set(_FIXED) | set(_IGNORED) | {
    'in_chans', 'embed_dim', 'depth', 'global_ratio', 'local_ratio', 'kernels',
    'drop_path', 'ssm_ratio', 'out_indices', 'pretrained', 'frozen_stages', 'norm_eval'
}


def _as_lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


def kwargs_from_official(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Official downstream ``MobileMamba(**config)`` kwargs -> ``mmssm.MobileMamba``.

    ``embed_dim`` and ``depth`` are required; the other classification arguments
    default to the values every released variant uses. ``img_size``, ``num_classes``
    and ``distillation`` have no effect on the downstream wrapper and are ignored.
    ``pretrained`` becomes ``init_cfg=dict(type='Pretrained', ...)`` (loaded by
    ``init_weights()``, converted, nested ``net`` checkpoints unwrapped; the official
    constructor would instead load silently and partially). Options the official code
    does not support either (``frozen_stages >= 0`` crashes there) or that we do not
    implement raise ``NotImplementedError``.
    """
    config = dict(config)
    unknown = sorted(set(config) - _KNOWN)
    if unknown:
        raise ValueError(f'MobileMamba: unknown official config keys {unknown}; known: '
                         f'{sorted(_KNOWN)}')
    for key in ('embed_dim', 'depth'):
        if key not in config:
            raise ValueError(f'MobileMamba: the official config must give {key!r}')
    for key, supported in _FIXED.items():
        if key in config and _as_lists(config[key]) != supported:
            hint = (' (use mmengine\'s SyncBN conversion, e.g. the runner\'s '
                    "cfg.sync_bn='torch', instead)" if key == 'sync_bn' else '')
            raise NotImplementedError(f'MobileMamba: official option {key}='
                                      f'{config[key]!r} is not supported; only '
                                      f'{supported!r}{hint}')
    frozen = config.get('frozen_stages', -1)
    if frozen != -1:
        raise NotImplementedError(
            f'MobileMamba: official frozen_stages={frozen} has no working semantics (the '
            'official wrapper raises for any value >= 0); pass frozen_stages to '
            'mmssm.MobileMamba directly (0 = stem, n = stem + blocks1..n)')
    arch = dict(embed_dims=list(config['embed_dim']), depths=list(config['depth']),
                global_ratios=list(config.get('global_ratio', [0.8, 0.7, 0.6])),
                local_ratios=list(config.get('local_ratio', [0.2, 0.2, 0.3])),
                kernel_sizes=list(config.get('kernels', [7, 5, 3])),
                ssm_ratio=float(config.get('ssm_ratio', 2.0)),
                drop_path_rate=float(config.get('drop_path', 0.0)))
    kwargs = dict(arch=arch, in_channels=int(config.get('in_chans', 3)),
                  out_indices=tuple(config.get('out_indices', (1, 2, 3))),
                  norm_eval=bool(config.get('norm_eval', False)))
    if config.get('pretrained'):
        # like the official wrapper: the ImageNet classifier is not used (declared)
        kwargs['init_cfg'] = dict(type='Pretrained', checkpoint=config['pretrained'],
                                  drop_classifier=True)
    return kwargs


CONVERTER = FamilyConverter(name='mobilemamba', convert=convert,
                            kwargs_from_official=kwargs_from_official, signature=signature,
                            container='net', prepare_model=prepare_model)
