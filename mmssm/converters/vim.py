"""Vision Mamba (github.com/hustvl/Vim): official checkpoints and ``VisionMambaSeg``
constructor kwargs -> :class:`mmssm.models.backbones.vim.Vim`.

Our module names equal the official ones, so converting a state dict only drops the
ImageNet classifier (``head.*``). Classification checkpoints (``{'model': ...,
'args': Namespace}``), mmseg 0.x segmentation checkpoints (``state_dict`` with
``backbone.*``) and mmssm checkpoints all convert; fitting ``pos_embed`` /
``cls_token`` / rope tables to a model of another size happens when loading
(:func:`prepare_model` -> :meth:`Vim.adapt_state_dict`), because it depends on the
target model.
"""
import re
import warnings
from collections import OrderedDict
from typing import Any, Dict, Mapping

from .base import FamilyConverter

# Keys only Vim blocks have (the backward-direction parameters of the bimamba mixer).
_SIGNATURE = re.compile(r'^layers\.\d+\.mixer\.(?:A_b_log|x_proj_b\.weight|conv1d_b\.weight)$')


def signature(state_dict: Mapping[str, Any]) -> bool:
    """True for Vim state dicts (official and mmssm naming are the same)."""
    return any(_SIGNATURE.match(key) for key in state_dict)


def convert(state_dict: Mapping[str, Any]) -> 'OrderedDict[str, Any]':
    """Official (or mmssm) Vim backbone state dict -> mmssm state dict (drops ``head.*``).

    Raises ``NotImplementedError`` for the variants mmssm does not implement: the
    double class token (``cls_token_head``/``cls_token_tail``) and bimamba v1 (one
    shared conv/x_proj/dt_proj for both directions, only ``A_b_log``).
    """
    if 'cls_token_head' in state_dict or 'cls_token_tail' in state_dict:
        raise NotImplementedError('Vim: checkpoints with a double class token '
                                  '(use_double_cls_token=True) are not supported')
    if any(k.endswith('mixer.A_b_log') for k in state_dict) and not any(
            k.endswith('mixer.x_proj_b.weight') for k in state_dict):
        raise NotImplementedError('Vim: bimamba v1 checkpoints (shared forward/backward '
                                  'projections, only A_b_log) are not supported; the '
                                  'released models are bimamba v2')
    return OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith('head.'))


def prepare_model(model, state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """Right before loading: drop the classifier and fit ``pos_embed`` /
    ``cls_token`` / rope tables to ``model`` (:meth:`Vim.adapt_state_dict`)."""
    state_dict = dict(convert(state_dict))
    adapt = getattr(model, 'adapt_state_dict', None)
    return adapt(state_dict) if adapt is not None else state_dict


# Constructor defaults of VisionMambaSeg (seg/backbone/vim.py) and VisionMamba
# (vim/models_mamba.py) at HEAD dd0358a.
OFFICIAL_DEFAULTS = dict(
    img_size=224, patch_size=16, stride=16, in_chans=3, num_classes=80, embed_dim=192,
    depth=24, use_checkpoint=False, pretrained=None, out_indices=(3, 5, 7, 11), if_fpn=True,
    use_residual_as_feature=False, last_layer_process='none', d_state=16, ssm_cfg=None,
    drop_rate=0.0, drop_path_rate=0.1, norm_epsilon=1e-5, rms_norm=True,
    initializer_cfg=None, fused_add_norm=True, residual_in_fp32=True, device=None,
    dtype=None, ft_seq_len=None, pt_hw_seq_len=14, if_bidirectional=False,
    final_pool_type='none', if_abs_pos_embed=True, if_rope=False, if_rope_residual=False,
    flip_img_sequences_ratio=-1.0, if_bimamba=False, bimamba_type='v2', if_cls_token=True,
    if_divide_out=True, init_layer_scale=None, use_double_cls_token=False,
    use_middle_cls_token=True)

# Accepted without effect on the function the wrapper computes:
# * num_classes, final_pool_type: the classifier is deleted, nothing is pooled;
# * use_middle_cls_token, if_cls_token: the wrapper never inserts the class token (it
#   deletes it and its pos_embed slot), so only the token-free layout matters;
# * ft_seq_len: overwritten by the wrapper (img_size // patch_size);
# * flip_img_sequences_ratio: only the classification forward uses it;
# * fused_add_norm: the unfused path computes the same function;
# * initializer_cfg and the dt_* entries of ssm_cfg: random initialisation only.
_NO_EFFECT = ('num_classes', 'final_pool_type', 'use_middle_cls_token', 'if_cls_token',
              'ft_seq_len', 'flip_img_sequences_ratio', 'fused_add_norm', 'initializer_cfg')
_SSM_STRUCTURE = {'d_conv': 'd_conv', 'expand': 'expand', 'dt_rank': 'dt_rank',
                  'conv_bias': 'conv_bias', 'bias': 'proj_bias'}
_SSM_INIT_ONLY = ('dt_min', 'dt_max', 'dt_init', 'dt_scale', 'dt_init_floor')
_LAST_LAYER = {'none': 'mixer', 'add': 'residual', 'add & norm': 'normed'}


def _require(cfg: Mapping[str, Any], key: str, allowed, why: str) -> None:
    if cfg[key] not in allowed:
        raise NotImplementedError(f'Vim: official {key}={cfg[key]!r} is not supported '
                                  f'({why})')


def _feature_indices(out_indices, depth: int, residual: bool) -> tuple:
    """Blocks whose features the official forward returns, in its order.

    It collects in block order every block ``i`` with ``i in out_indices`` (mixer
    features) or ``i - 1 in out_indices`` (residual features, gathered while running
    block ``i``), then, for residual features, the last block if and only if
    ``out_indices[-1] == depth - 1``."""
    indices = [int(i) for i in out_indices]
    for index in indices:
        if not 0 <= index < depth:
            raise NotImplementedError(
                f'Vim: official out_indices {list(out_indices)} for depth {depth}: entry '
                f'{index} selects no block in the official forward (negative or too large)')
    chosen = set(indices)
    if residual:
        chosen.discard(depth - 1)
        if indices and indices[-1] == depth - 1:
            chosen.add(depth - 1)
    return tuple(sorted(chosen))


def kwargs_from_official(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``VisionMambaSeg(**config)`` (built the intended way: ``in_chans`` -> channels,
    see docs/vim.md) -> ``Vim`` kwargs computing the same outputs.

    Raises ``NotImplementedError`` for options mmssm does not implement and
    ``TypeError`` for a ``channels`` entry (it would collide with ``in_chans``).
    """
    config = dict(config)
    if 'channels' in config:
        raise TypeError("Vim: official config passes 'channels'; VisionMambaSeg takes "
                        "'in_chans' (the keyword call would receive 'channels' twice)")
    unknown = sorted(set(config) - set(OFFICIAL_DEFAULTS))
    if unknown:
        # VisionMamba swallows unknown keywords (**kwargs); so do we, loudly.
        warnings.warn(f'Vim: ignoring official config keys without effect in the official '
                      f'model: {unknown}')
    cfg = {**OFFICIAL_DEFAULTS, **{k: v for k, v in config.items() if k in OFFICIAL_DEFAULTS}}

    _require(cfg, 'if_abs_pos_embed', (True, ), 'the wrapper adds self.pos_embed '
             'unconditionally')
    _require(cfg, 'if_bidirectional', (False, ), 'paired forward/backward blocks')
    _require(cfg, 'if_bimamba', (False, ), 'bimamba v1')
    _require(cfg, 'bimamba_type', ('v2', ), "only bimamba v2 is implemented; 'none' "
             "and 'v1' are not")
    _require(cfg, 'init_layer_scale', (None, ), 'layer scale')
    _require(cfg, 'use_double_cls_token', (False, ), 'double class token')
    _require(cfg, 'device', (None, ), 'build on the default device, then move')
    _require(cfg, 'dtype', (None, ), 'build in fp32, then cast')
    if cfg['last_layer_process'] not in _LAST_LAYER:
        raise NotImplementedError(f"Vim: official last_layer_process="
                                  f"{cfg['last_layer_process']!r}; expected one of "
                                  f'{sorted(_LAST_LAYER)}')
    patch_size, stride = int(cfg['patch_size']), int(cfg['stride'])
    if cfg['if_fpn'] and patch_size not in (16, 8):
        raise NotImplementedError(f'Vim: the official wrapper has adapters only for '
                                  f'patch_size 16 and 8, got {patch_size}')
    if cfg['if_rope'] and stride != patch_size:
        raise NotImplementedError('Vim: official rope tables cover img_size // patch_size '
                                  'tokens per side and do not fit stride != patch_size')

    ssm_cfg = dict(cfg['ssm_cfg'] or {})
    arch = dict(embed_dims=int(cfg['embed_dim']), depth=int(cfg['depth']),
                patch_size=patch_size, stride=stride, d_state=int(cfg['d_state']))
    for key, value in ssm_cfg.items():
        if key in _SSM_STRUCTURE:
            arch[_SSM_STRUCTURE[key]] = value
        elif key == 'use_fast_path':
            if not value:
                raise NotImplementedError('Vim: ssm_cfg use_fast_path=False runs a '
                                          'unidirectional Mamba (official fallback path)')
        elif key not in _SSM_INIT_ONLY:
            raise NotImplementedError(f'Vim: official ssm_cfg key {key!r} is not supported')

    residual = bool(cfg['use_residual_as_feature'])
    out_indices = _feature_indices(cfg['out_indices'], arch['depth'], residual)
    if not out_indices:
        raise NotImplementedError(f"Vim: official out_indices {cfg['out_indices']} select "
                                  'no feature')
    if cfg['if_fpn'] and len(out_indices) > 4:
        raise NotImplementedError(f'Vim: the official wrapper fails with if_fpn and '
                                  f'{len(out_indices)} features (it has 4 adapters)')
    kwargs = dict(
        arch=arch,
        img_size=cfg['img_size'],
        in_channels=int(cfg['in_chans']),
        out_indices=out_indices,
        with_cls_token=False,  # deleted by the wrapper together with its pos_embed slot
        feature_type='residual' if residual else 'mixer',
        last_feature=_LAST_LAYER[cfg['last_layer_process']],
        with_fpn=bool(cfg['if_fpn']),
        fpn_scales=(4.0, 2.0, 1.0, 0.5) if patch_size == 16 else (2.0, 1.0, 0.5, 0.25),
        fpn_norm='SyncBN',
        use_rope=bool(cfg['if_rope']),
        rope_residual=bool(cfg['if_rope_residual']),
        rope_pretrain_grid=int(cfg['pt_hw_seq_len']),
        norm_type='rms' if cfg['rms_norm'] else 'ln',
        norm_eps=float(cfg['norm_epsilon']),
        residual_in_fp32=bool(cfg['residual_in_fp32']),
        divide_out=bool(cfg['if_divide_out']),
        drop_rate=float(cfg['drop_rate']),
        drop_path_rate=float(cfg['drop_path_rate']),
        with_cp=bool(cfg['use_checkpoint']),
    )
    if not kwargs['with_fpn']:
        kwargs.pop('fpn_scales')
    if cfg['pretrained'] is not None:
        if not isinstance(cfg['pretrained'], str):
            raise TypeError(f"Vim: pretrained must be a path or None, got "
                            f"{type(cfg['pretrained']).__name__}")
        # NOTE: our loader keeps every position with its patch; the official one
        # shifts the middle-class-token checkpoints by one (docs/vim.md).
        # like the official wrapper: classifier and class token not used, pos_embed
        # resized, adapters and rope tables new (declared: our loading is strict)
        kwargs['init_cfg'] = dict(type='Pretrained', checkpoint=cfg['pretrained'],
                                  drop_classifier=True, allow_unexpected=['cls_token'],
                                  allow_resized=['pos_embed'],
                                  allow_missing=['fpn*', 'rope.*'])
    return kwargs


def detectron2_stride(state_dict: Mapping[str, Any]) -> int:
    """The patch size of a ViTDet Vim trunk (its simple feature pyramid's base stride)."""
    weight = state_dict.get('patch_embed.proj.weight')
    return int(weight.shape[-1]) if weight is not None else 16


def unread_entries(model) -> Dict[str, str]:
    """``norm_f`` when the model's forward never reads it (the official detection wrapper
    deletes it, so detectron2 checkpoints lack it)."""
    if getattr(model, 'last_feature', 'normed') == 'normed' or getattr(
            model, 'out_type', 'featmap') != 'featmap':
        return {}
    why = ("the official detection wrapper deletes norm_f; with "
           f"last_feature='{model.last_feature}' the forward never reads it")
    return {key: why for key in model.state_dict() if key.startswith('norm_f.')}


CONVERTER = FamilyConverter(name='vim', convert=convert,
                            kwargs_from_official=kwargs_from_official, signature=signature,
                            prepare_model=prepare_model, detectron2_stride=detectron2_stride,
                            unread_entries=unread_entries)
