"""MSVMamba (github.com/YuHengsss/MSVMamba, master): official checkpoints and
``MM_VSSM`` constructor kwargs -> :class:`mmssm.models.backbones.msvmamba.MSVMamba`.

Our module names equal the official ones except the MS2D squeeze-excitation, which is
mmssm's shared ``SqueezeExcite`` (1x1 convolutions): ``op.se.fc.0.weight`` (C/8, C) ->
``op.se.conv_reduce.weight`` (C/8, C, 1, 1), ``op.se.fc.2.weight`` ->
``op.se.conv_expand.weight``. Converting a state dict applies the official legacy renames
(``VSSM._load_from_state_dict``), that SE mapping, and drops the classifier.
"""
import re
import warnings
from collections import OrderedDict
from typing import Any, Dict, Mapping

import torch.nn as nn

from .base import FamilyConverter

# (pattern, replacement) applied in this order, as the official loader does.
LEGACY_RENAMES = (
    (re.compile(r'^patch_embed\.proj\.'), 'patch_embed.0.'),
    (re.compile(r'^patch_embed\.norm\.'), 'patch_embed.2.'),
    (re.compile(r'^(layers\.\d+\.blocks\.\d+\.)ln_1\.'), r'\1norm.'),
    (re.compile(r'^(layers\.\d+\.blocks\.\d+\.)self_attention\.'), r'\1op.'),
    (re.compile(r'^norm\.'), 'classifier.norm.'),
    (re.compile(r'^head\.'), 'classifier.head.'),
)

# Keys only MSVMamba blocks have (official or mmssm naming).
_SIGNATURE = re.compile(
    r'^layers\.\d+\.blocks\.\d+\.(?:(?:op|self_attention)\.(?:conv2d_b1|se\.fc\.0'
    r'|se\.conv_reduce)|convFFN\.linear1)\.weight$')
# The official SE's two Linear layers -> SqueezeExcite's 1x1 convolutions.
_SE_LINEAR = re.compile(r'^(.*\.op\.se\.)fc\.([02])\.weight$')
_SE_NAMES = {'0': 'conv_reduce', '2': 'conv_expand'}


def signature(state_dict: Mapping[str, Any]) -> bool:
    """True for MSVMamba state dicts (multi-scale conv, MS2D SE or ConvFFN keys)."""
    return any(_SIGNATURE.match(key) for key in state_dict)


def _check_master_branch(state_dict: Mapping[str, Any]) -> None:
    """The v2 branch (MSVMambav3) shares block key names but not the architecture:
    its stem (``patch_embed.5``) and downsampling (``downsample.1``) are convolutions."""
    if 'patch_embed.5.weight' in state_dict or any(
            re.match(r'^layers\.\d+\.downsample\.1\.weight$', k) for k in state_dict):
        raise NotImplementedError(
            'this is an MSVMambav3 checkpoint (MSVMamba v2 branch: conv stem '
            'patch_embed.5, conv downsample); mmssm implements the master-branch '
            'Nano/Micro/Tiny family only')


def convert(state_dict: Mapping[str, Any]) -> 'OrderedDict[str, Any]':
    """Official (or mmssm) MSVMamba backbone state dict -> mmssm state dict.

    Applies the official legacy renames and drops ``classifier.*`` (the ImageNet
    head); the ``outnorm{i}`` keys are absent from classification checkpoints and
    stay at their LayerNorm init, as in the official wrapper.
    """
    _check_master_branch(state_dict)
    out = OrderedDict()
    for key, value in state_dict.items():
        for pattern, replacement in LEGACY_RENAMES:
            key = pattern.sub(replacement, key, count=1)
        if key.startswith('classifier.'):
            continue
        se = _SE_LINEAR.match(key)
        if se is not None:
            key = f'{se.group(1)}{_SE_NAMES[se.group(2)]}.weight'
            value = value.reshape(*value.shape, 1, 1)
        out[key] = value
    return out


# Official constructor defaults (VSSM / Backbone_VSSM / SS2D / VSSBlock) for the keys
# that change the model.
OFFICIAL_DEFAULTS = dict(
    out_indices=(0, 1, 2, 3), pretrained=None, patch_size=4, in_chans=3,
    depths=(2, 2, 9, 2), dims=(96, 192, 384, 768), ssm_d_state=16, ssm_ratio=2.0,
    ssm_rank_ratio=2.0, ssm_dt_rank='auto', ssm_act_layer='silu', ssm_conv=3,
    ssm_conv_bias=True, ssm_drop_rate=0.0, ssm_simple_init=False, forward_type='v2',
    mlp_ratio=4.0, drop_path_rate=0.1, patch_norm=True, norm_layer='ln',
    downsample_version='v2', patchembed_version='v1', use_checkpoint=False,
    sscore_type='None', ms_stage=None, ms_split=None, add_se=False, convFFN=False,
    ffn_dropout=0.2, add_conv=True, sep_norm=False, upsample=None, bias=False)

# Accepted and without effect on the model: classifier size, unused MLP options, the
# dt initialisation range (we load weights), SS2D's dead ``up_sample``/``ms_fusion``,
# and the Swin keys that the official mmdet/mmseg configs merge into the backbone dict
# (the official code swallows them through **kwargs).
IGNORED_KEYS = frozenset({
    'num_classes', 'mlp_act_layer', 'mlp_drop_rate', 'dt_min', 'dt_max', 'dt_init',
    'dt_scale', 'dt_init_floor', 'up_sample', 'ms_fusion',
    'embed_dims', 'num_heads', 'window_size', 'qkv_bias', 'qk_scale', 'drop_rate',
    'attn_drop_rate', 'with_cp', 'convert_weights', 'init_cfg', 'pretrain_img_size',
    'strides', 'use_abs_pos_embed', 'act_cfg', 'norm_cfg', 'frozen_stages',
    'in_channels', 'type',
})


def _unsupported(option: str, value: Any, supported: str) -> NotImplementedError:
    return NotImplementedError(
        f'MSVMamba: official option {option}={value!r} is not implemented by mmssm '
        f'(supported: {supported})')


def _is_layer_norm(norm_layer: Any) -> bool:
    if isinstance(norm_layer, str):
        return norm_layer.lower() == 'ln'
    return norm_layer is nn.LayerNorm


def kwargs_from_official(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Official ``MM_VSSM(**config)`` kwargs -> ``mmssm.MSVMamba`` kwargs.

    Raises ``NotImplementedError`` for official options mmssm does not implement and
    ``ValueError`` for inconsistent values; warns about (and, like the official code,
    ignores) unknown keys.
    """
    unknown = sorted(set(config) - set(OFFICIAL_DEFAULTS) - IGNORED_KEYS)
    if unknown:
        warnings.warn(f'MSVMamba: ignoring official kwargs {unknown} (the official '
                      'model ignores them too)')
    cfg = {**OFFICIAL_DEFAULTS, **config}

    if cfg['sscore_type'] != 'multiscale_4scan_12':
        raise _unsupported('sscore_type', cfg['sscore_type'],
                           "'multiscale_4scan_12'; plain VSSM models are the vmamba family")
    if list(cfg['ms_split'] or ()) != [1, 3]:
        raise _unsupported('ms_split', cfg['ms_split'], '[1, 3]')
    depths = [int(d) for d in cfg['depths']]
    num_stages = len(depths)
    if cfg['ms_stage'] is None or not set(range(num_stages)) <= set(cfg['ms_stage']):
        raise _unsupported('ms_stage', cfg['ms_stage'],
                           f'every stage multi-scale, i.e. {list(range(num_stages))}')
    checks = (
        ('convFFN', cfg['convFFN'] is True, 'True'),
        ('mlp_ratio', float(cfg['mlp_ratio']) == 0.0, '0.0 (ConvFFN only)'),
        ('downsample_version', cfg['downsample_version'] == 'v1', "'v1'"),
        ('patchembed_version', cfg['patchembed_version'] == 'v1', "'v1'"),
        ('patch_norm', cfg['patch_norm'] is True, 'True'),
        ('norm_layer', _is_layer_norm(cfg['norm_layer']), "'ln' / nn.LayerNorm"),
        ('ssm_act_layer', str(cfg['ssm_act_layer']).lower() == 'silu', "'silu'"),
        ('ssm_conv', cfg['ssm_conv'] == 3, '3'),
        ('ssm_simple_init', not cfg['ssm_simple_init'], 'False'),
        ('add_conv', cfg['add_conv'] is True, 'True'),
        ('sep_norm', not cfg['sep_norm'], 'False'),
        ('upsample', cfg['upsample'] in (None, 'interpolate'), "None / 'interpolate'"),
        ('bias', not cfg['bias'], 'False'),
    )
    for option, ok, supported in checks:
        if not ok:
            raise _unsupported(option, cfg[option], supported)
    forward_type = str(cfg['forward_type'])
    if forward_type.endswith(('nozact', 'softmax', 'sigmoid')):
        raise _unsupported('forward_type', forward_type,
                           "a type without the 'nozact'/'softmax'/'sigmoid' suffix")
    ssm_ratio = float(cfg['ssm_ratio'])
    rank_ratio = float(cfg['ssm_rank_ratio'])
    if ssm_ratio <= 0:
        raise _unsupported('ssm_ratio', ssm_ratio, '> 0')
    if 0 < rank_ratio < ssm_ratio:  # the official low-rank in_rank/out_rank path
        raise _unsupported('ssm_rank_ratio', rank_ratio, f'>= ssm_ratio ({ssm_ratio})')

    dims = cfg['dims']
    if isinstance(dims, int):
        dims = [dims * 2**i for i in range(num_stages)]
    else:
        dims = [int(d) for d in dims]
        if len(dims) < num_stages:
            raise ValueError(f'MSVMamba: dims {dims} has fewer entries than depths '
                             f'{depths}')
        dims = dims[:num_stages]
    out_indices = tuple(int(i) for i in cfg['out_indices'])
    if any(not 0 <= i < num_stages for i in out_indices):
        raise ValueError(f'MSVMamba: official out_indices {out_indices} must lie in '
                         f'[0, {num_stages - 1}]')
    d_state = cfg['ssm_d_state']
    dt_rank = cfg['ssm_dt_rank']
    arch = dict(dims=dims, depths=depths,
                d_state=d_state if d_state == 'auto' else int(d_state),
                ssm_ratio=ssm_ratio,
                dt_rank=dt_rank if dt_rank == 'auto' else int(dt_rank),
                use_se=bool(cfg['add_se']), conv_bias=bool(cfg['ssm_conv_bias']))
    if min(dims) < 1:
        raise ValueError(f'MSVMamba: dims must be positive, got {dims}')
    kwargs = dict(arch=arch, in_channels=int(cfg['in_chans']),
                  patch_size=int(cfg['patch_size']), out_indices=out_indices,
                  drop_path_rate=float(cfg['drop_path_rate']),
                  ffn_drop_rate=float(cfg['ffn_dropout']),
                  ssm_drop_rate=float(cfg['ssm_drop_rate']),
                  with_cp=bool(cfg['use_checkpoint']))
    if cfg['pretrained']:
        # The official wrapper loads ckpt['model'] in its constructor; ours loads in
        # init_weights() and raises instead of printing on failure.
        # Like the official wrapper, the ImageNet classifier is not used and the output
        # norms are new (declared: our loading is strict otherwise).
        kwargs['init_cfg'] = dict(type='Pretrained', checkpoint=cfg['pretrained'],
                                  drop_classifier=True, allow_missing=['outnorm*'])
    return kwargs


CONVERTER = FamilyConverter(
    name='msvmamba',
    convert=convert,
    kwargs_from_official=kwargs_from_official,
    signature=signature,
)
