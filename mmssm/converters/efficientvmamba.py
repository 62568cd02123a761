"""EfficientVMamba (TerryPei/EfficientVMamba) -> :class:`mmssm.EfficientVMamba`.

Key mapping (everything else keeps its official name):

* convolutional stages (official flat ``nn.Sequential``: index 0 and d+1 are
  parameter-free permutes): ``layers.<i>.<j>.*`` (inverted residual j = 1..d) ->
  ``layers.<i>.blocks.<j-1>.*``; ``layers.<i>.<d+2>.*`` (downsample) ->
  ``layers.<i>.downsample.*``;
* ``classifier.*`` (classification checkpoints) is dropped; ``module.`` prefixes are
  stripped (the official loader removes ``module.module.``);
* the legacy renames of the official ``VSSM._load_from_state_dict`` are applied
  (``patch_embed.proj/norm`` -> ``patch_embed.0/2``, ``ln_1`` -> ``norm``,
  ``self_attention`` -> ``op``; top-level ``norm``/``head`` are classifier weights).

Already converted (mmssm) state dicts pass through unchanged.

Official constructor kwargs (``MM_EfficientVSSM`` / ``Backbone_EfficientVSSM``, see
:func:`kwargs_from_official`): only ``dims, depths, ssm_ratio, mlp_ratio, patch_size,
in_chans, patch_norm, norm_layer, downsample_version, drop_path_rate, use_checkpoint,
step_size, out_indices, pretrained`` change the official model. Everything else is
accepted and ignored, as the official constructor ignores it: its own no-op arguments
(``d_state, dt_rank, attn_drop_rate, shared_ssm, softmax_version, drop_rate,
num_classes``), VMamba arguments that never reach the blocks (``ssm_d_state,
ssm_dt_rank, ssm_rank_ratio, ssm_act_layer, ssm_conv, ssm_conv_bias, ssm_drop_rate,
ssm_simple_init, forward_type, mlp_act_layer, mlp_drop_rate, patchembed_version,
window_size``) and the Swin keys the official mmdet configs leave in the backbone dict
(``embed_dims, num_heads, qkv_bias, qk_scale, with_cp, convert_weights, init_cfg, ...``).
Other unknown keys are ignored with a warning (the official ``**kwargs`` swallows them).
"""
import re
import warnings
from collections import OrderedDict, defaultdict
from typing import Any, Dict, Mapping

import torch

from .base import FamilyConverter

Tensor = torch.Tensor

OFFICIAL_CLASSES = ('MM_EfficientVSSM', 'Backbone_EfficientVSSM', 'EfficientVSSM')

# Accepted by the official constructor without any effect on the model.
IGNORED_KWARGS = frozenset({
    # EfficientVSSM's own arguments that are never used (blocks always use N = 16 and
    # dt_rank = ceil(C / 16)); the classifier (num_classes) is deleted by the wrapper.
    'd_state', 'dt_rank', 'attn_drop_rate', 'shared_ssm', 'softmax_version', 'drop_rate',
    'num_classes',
    # VMamba-style arguments swallowed by **kwargs (EfficientVSSM does not pass them on).
    'ssm_d_state', 'ssm_dt_rank', 'ssm_rank_ratio', 'ssm_act_layer', 'ssm_conv',
    'ssm_conv_bias', 'ssm_drop_rate', 'ssm_simple_init', 'forward_type', 'mlp_act_layer',
    'mlp_drop_rate', 'patchembed_version', 'window_size',
    # Swin leftovers of the official mmdet configs (merged without _delete_); with_cp and
    # init_cfg included: the official class reads use_checkpoint / pretrained instead.
    'embed_dims', 'num_heads', 'qkv_bias', 'qk_scale', 'with_cp', 'convert_weights',
    'init_cfg', 'pretrain_img_size', 'in_channels', 'strides', 'act_cfg', 'norm_cfg',
})
EFFECTIVE_KWARGS = frozenset({
    'dims', 'depths', 'ssm_ratio', 'mlp_ratio', 'patch_size', 'in_chans', 'patch_norm',
    'norm_layer', 'downsample_version', 'drop_path_rate', 'use_checkpoint', 'step_size',
    'out_indices', 'pretrained'
})
# Official defaults (EfficientVSSM / Backbone_EfficientVSSM signatures).
OFFICIAL_DEFAULTS = dict(dims=[96, 192, 384, 768], depths=[2, 2, 9, 2], ssm_ratio=2.0,
                         mlp_ratio=4.0, patch_size=4, in_chans=3, patch_norm=True,
                         downsample_version='v2', drop_path_rate=0.1, use_checkpoint=False,
                         step_size=2, out_indices=(0, 1, 2, 3), pretrained=None)

_IR_PARTS = ('conv_pw.', 'conv_dw.', 'se.', 'conv_pw2.')
_FLAT_STAGE_KEY = re.compile(r'^layers\.(\d+)\.(\d+)\.(.+)$')
_LEGACY_BLOCK = re.compile(r'^(layers\.\d+\.blocks\.\d+\.)(ln_1|self_attention)\.')


def _legacy_rename(key: str) -> str:
    if key.startswith('patch_embed.proj.'):
        return 'patch_embed.0.' + key[len('patch_embed.proj.'):]
    if key.startswith('patch_embed.norm.'):
        return 'patch_embed.2.' + key[len('patch_embed.norm.'):]
    match = _LEGACY_BLOCK.match(key)
    if match:
        new = 'norm.' if match.group(2) == 'ln_1' else 'op.'
        return match.group(1) + new + key[match.end():]
    return key


def _is_classifier(key: str) -> bool:
    return key.startswith(('classifier.', 'head.', 'norm.'))


def convert(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Official EfficientVMamba state dict (classification or detection backbone,
    classifier keys allowed) -> mmssm :class:`EfficientVMamba` state dict (same order)."""
    entries = []  # (key, value, flat-stage match or None)
    flat: Dict[int, Dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for key, value in state_dict.items():
        while key.startswith('module.'):
            key = key[len('module.'):]
        key = _legacy_rename(key)
        if _is_classifier(key):
            continue
        match = _FLAT_STAGE_KEY.match(key)
        if match:
            flat[int(match.group(1))][int(match.group(2))].append(match.group(3))
        entries.append((key, value, match))
    # Which flat indices are inverted residuals (1..d) and which is the downsample (d+2).
    block_index: Dict[int, Dict[int, int]] = {}
    for stage, items in flat.items():
        blocks = sorted(j for j, tails in items.items()
                        if all(tail.startswith(_IR_PARTS) for tail in tails))
        others = sorted(set(items) - set(blocks))
        if blocks != list(range(1, len(blocks) + 1)) or others not in (
                [], [len(blocks) + 2]):
            raise ValueError(
                f'efficientvmamba checkpoint: stage layers.{stage} has inverted-residual '
                f'entries at indices {blocks} and other entries at {others}; expected '
                f'blocks 1..d and the downsample at d + 2 (official nn.Sequential layout)')
        block_index[stage] = {j: j - 1 for j in blocks}
    out = OrderedDict()
    for key, value, match in entries:
        if match:
            stage, index, tail = int(match.group(1)), int(match.group(2)), match.group(3)
            if index in block_index[stage]:
                key = f'layers.{stage}.blocks.{block_index[stage][index]}.{tail}'
            else:
                key = f'layers.{stage}.downsample.{tail}'
        out[key] = value
    return out


_SIGNATURES = (
    re.compile(r'(^|\.)layers\.\d+\.blocks\.\d+\.conv_branch\.\d+\.'),  # EVSS local branch
    re.compile(r'(^|\.)layers\.\d+\.blocks\.\d+\.se\.global_reduce\.'),  # EVSS BiAttn
    re.compile(r'(^|\.)layers\.\d+\.(blocks\.)?\d+\.conv_pw\.\d+\.'),  # inverted residual
)


def signature(state_dict: Mapping[str, Tensor]) -> bool:
    """True for EfficientVMamba state dicts (official or mmssm naming): EVSS blocks
    (``conv_branch``, ``se.global_reduce``) or inverted residuals (``conv_pw``)."""
    return any(pattern.search(key) for key in state_dict for pattern in _SIGNATURES)


def kwargs_from_official(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Official ``MM_EfficientVSSM(**config)`` kwargs -> ``mmssm.EfficientVMamba`` kwargs.

    Missing keys take the official defaults (note: ``mlp_ratio=4.0`` and
    ``downsample_version='v2'``, which the official configs override). Raises
    ``NotImplementedError`` for options that would change the official model in ways
    not implemented here (``ssm_ratio > 2`` low-rank SS2D, ``step_size != 2``, a
    norm layer other than LayerNorm) and ``ValueError`` for invalid values.
    """
    config = dict(config)
    type_name = config.pop('type', None)
    if type_name is not None and str(type_name).split('.')[-1] not in OFFICIAL_CLASSES:
        raise ValueError(f'efficientvmamba config: type {type_name!r} is not an official '
                         f'EfficientVMamba backbone class ({", ".join(OFFICIAL_CLASSES)})')
    unknown = sorted(set(config) - EFFECTIVE_KWARGS - IGNORED_KWARGS)
    if unknown:
        warnings.warn(f'efficientvmamba config: ignoring unknown keys {unknown} (the official '
                      'constructor swallows them in **kwargs as well)')
    cfg = {**OFFICIAL_DEFAULTS, **{k: v for k, v in config.items() if k in EFFECTIVE_KWARGS}}

    norm_layer = cfg.get('norm_layer')
    if norm_layer is not None and norm_layer is not torch.nn.LayerNorm:
        raise NotImplementedError(f'efficientvmamba config: norm_layer={norm_layer!r} is not '
                                  'supported (only nn.LayerNorm, as in every official model)')
    if cfg['step_size'] != 2:
        raise NotImplementedError(f'efficientvmamba config: step_size={cfg["step_size"]} is '
                                  'not supported (the ES2D atrous scan is implemented for '
                                  'step 2, the value of every official model)')
    if cfg['ssm_ratio'] > 2.0:
        raise NotImplementedError(f'efficientvmamba config: ssm_ratio={cfg["ssm_ratio"]} > 2 '
                                  'builds the official low-rank SS2D (in_rank/out_rank), '
                                  'which is not implemented')
    depths = list(cfg['depths'])
    dims = cfg['dims']
    if not isinstance(dims, int):
        dims = list(dims)
        if len(dims) < len(depths):
            raise ValueError(f'efficientvmamba config: dims {dims} has fewer entries than '
                             f'depths {depths}')
        dims = dims[:len(depths)]  # the official model only reads dims[:num_stages]
    out_indices = cfg['out_indices']
    out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
    bad = [i for i in out_indices if not 0 <= i < len(depths)]
    if bad:
        raise ValueError(f'efficientvmamba config: out_indices {bad} are not stage indices '
                         f'0..{len(depths) - 1} (the official wrapper would never return '
                         'them)')
    arch = dict(dims=dims, depths=depths, ssm_ratio=float(cfg['ssm_ratio']),
                mlp_ratio=float(cfg['mlp_ratio']), patch_size=int(cfg['patch_size']),
                patch_norm=bool(cfg['patch_norm']),
                # The official code builds the conv downsample for 'v2' and PatchMerging2D
                # for any other value.
                downsample_version='v2' if cfg['downsample_version'] == 'v2' else 'v1')
    kwargs = dict(arch=arch, in_channels=int(cfg['in_chans']), out_indices=tuple(out_indices),
                  drop_path_rate=float(cfg['drop_path_rate']),
                  with_cp=bool(cfg['use_checkpoint']))
    if cfg['pretrained']:
        # like the official wrapper: the ImageNet classifier is not used, the output
        # norms are new (declared: our loading is strict otherwise)
        kwargs['init_cfg'] = dict(type='Pretrained', checkpoint=cfg['pretrained'],
                                  drop_classifier=True, allow_missing=['outnorm*'])
    return kwargs


CONVERTER = FamilyConverter(
    name='efficientvmamba',
    convert=convert,
    kwargs_from_official=kwargs_from_official,
    signature=signature,
)
