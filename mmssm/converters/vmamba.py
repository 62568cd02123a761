"""VMamba (MzeroMiko/VMamba) checkpoints and configs -> :class:`mmssm.VMamba`.

State-dict names. Ours equal the official ones except where the official module is an
index inside an ``nn.Sequential``:

=====================================  =========================================
official                               mmssm
=====================================  =========================================
``patch_embed.0/.2/.5/.7`` (stem v2)   ``patch_embed.conv1/.norm1/.conv2/.norm2``
``patch_embed.0/.2`` (stem v1)         ``patch_embed.proj/.norm``
``layers.i.downsample.1/.3`` (v2, v3)  ``layers.i.downsample.conv/.norm``
=====================================  =========================================

(the stem version is read off the keys: ``patch_embed.5`` exists only in stem v2.)

Everything else (``layers.i.blocks.j.{norm,op.*,norm2,mlp.fc1,mlp.fc2}``, the v1
``layers.i.downsample.{norm,reduction}``, ``outnorm{i}``) is kept. Before that, the
renames of the official ``VSSM._load_from_state_dict`` are applied to legacy files:
``patch_embed.proj/.norm`` -> ``patch_embed.0/.2``, ``blocks.j.ln_1`` -> ``.norm``,
``blocks.j.self_attention`` -> ``.op``, top-level ``norm*`` / ``head*`` -> the
classifier. Classifier entries (``classifier.*``) are dropped; ``outnorm*`` entries
(mmdet/mmseg checkpoints) are kept. Linear2d weights stored 1x1-conv shaped
(out, in, 1, 1) are reshaped to (out, in), as the official ``Linear2d`` does on load.

Configs: :func:`kwargs_from_official` maps the keyword arguments of the official
downstream ``MM_VSSM`` (``Backbone_VSSM`` / ``VSSM``) onto an explicit arch dict; the
official options this reimplementation does not have raise ``NotImplementedError``.
"""
import re
from collections import OrderedDict
from typing import Any, Dict, Mapping

import torch

from .base import FamilyConverter

Tensor = torch.Tensor

# ---------------------------------------------------------------------------------------
# state dicts

_STEM_V2 = {'0': 'conv1', '2': 'norm1', '5': 'conv2', '7': 'norm2'}
_STEM_V1 = {'0': 'proj', '2': 'norm'}
_CONV_DOWNSAMPLE = {'1': 'conv', '3': 'norm'}

_BLOCK_KEY = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(.+)$')
_BLOCK_ENTRIES = {
    f'{module}.{param}'
    for module in ('norm', 'ln_1', 'norm2', 'mlp.fc1', 'mlp.fc2')
    for param in ('weight', 'bias')
}
_OP_ENTRIES = {
    'x_proj_weight', 'A_logs', 'Ds', 'dt_projs_weight', 'dt_projs_bias', 'out_norm.weight',
    'out_norm.bias', 'in_proj.weight', 'in_proj.bias', 'conv2d.weight', 'conv2d.bias',
    'out_proj.weight', 'out_proj.bias'
}
_OTHER_KEYS = re.compile(r'^(patch_embed\..+|layers\.\d+\.downsample\..+'
                         r'|outnorm\d+\.(weight|bias)|classifier\..+|norm.*|head.*|pos_embed)$')
_LINEAR2D = re.compile(r'\.(op\.in_proj|op\.out_proj|mlp\.fc1|mlp\.fc2)\.weight$')


def _legacy_rename(key: str) -> str:
    """The renames the official ``VSSM._load_from_state_dict`` applies."""
    for old, new in (('patch_embed.proj.', 'patch_embed.0.'),
                     ('patch_embed.norm.', 'patch_embed.2.')):
        if key.startswith(old):
            return new + key[len(old):]
    match = _BLOCK_KEY.match(key)
    if match:
        head = f'layers.{match.group(1)}.blocks.{match.group(2)}.'
        rest = match.group(3)
        for old, new in (('ln_1.', 'norm.'), ('self_attention.', 'op.')):
            if rest.startswith(old):
                return head + new + rest[len(old):]
        return key
    if key.startswith('norm'):
        return 'classifier.norm' + key[len('norm'):]
    if key.startswith('head'):
        return 'classifier.head' + key[len('head'):]
    return key


def convert(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Official VMamba backbone/classification state dict -> mmssm ``VMamba`` names.

    mmssm names pass through unchanged, so an already converted dict is accepted too.
    """
    renamed = OrderedDict((_legacy_rename(k), v) for k, v in state_dict.items())
    if 'pos_embed' in renamed:
        raise NotImplementedError(
            'VMamba checkpoint has a pos_embed (official posembed=True); mmssm.VMamba does '
            'not implement the absolute position embedding')
    stem = _STEM_V2 if any(k.startswith('patch_embed.5.') for k in renamed) else _STEM_V1
    out = OrderedDict()
    for key, value in renamed.items():
        if key.startswith('classifier.'):
            continue
        parts = key.split('.')
        if parts[0] == 'patch_embed' and parts[1] in stem:
            parts[1] = stem[parts[1]]
        elif (len(parts) > 3 and parts[0] == 'layers' and parts[2] == 'downsample'
              and parts[3] in _CONV_DOWNSAMPLE):
            parts[3] = _CONV_DOWNSAMPLE[parts[3]]
        key = '.'.join(parts)
        if _LINEAR2D.search(key) and value.dim() == 4 and value.shape[2:] == (1, 1):
            value = value.flatten(1)
        out[key] = value
    return out


def signature(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether ``state_dict`` (official or mmssm naming) is a VMamba backbone.

    Every entry must be one VMamba has (stem, downsample, out-norm, classifier, or a
    VSS block entry: norm / SS2D op / norm2 / mlp) and the SS2D routes must be the 4
    cross-scan directions. That rejects the relatives sharing most names: MSVMamba
    (``op.conv2d_b1``, ``op.se``, ``convFFN``), EfficientVMamba (``conv_branch``,
    ``se.*``, conv stages ``layers.i.j``), MobileMamba and Vim.
    """
    routes = []
    for key, value in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match is None:
            if not _OTHER_KEYS.match(key):
                return False
            continue
        rest = match.group(3)
        if rest in _BLOCK_ENTRIES:
            continue
        for op in ('op.', 'self_attention.'):
            if rest.startswith(op) and rest[len(op):] in _OP_ENTRIES:
                break
        else:
            return False
        if rest.endswith('x_proj_weight'):
            routes.append(value.shape[0] if value.dim() == 3 else -1)
    return bool(routes) and all(k == 4 for k in routes)


# ---------------------------------------------------------------------------------------
# constructor kwargs

# MM_VSSM / Backbone_VSSM / VSSM defaults (official classification/models/vmamba.py).
OFFICIAL_DEFAULTS: Dict[str, Any] = dict(
    out_indices=(0, 1, 2, 3), pretrained=None, norm_layer='ln', patch_size=4, in_chans=3,
    num_classes=1000, depths=[2, 2, 9, 2], dims=96, ssm_d_state=16, ssm_ratio=2.0,
    ssm_dt_rank='auto', ssm_act_layer='silu', ssm_conv=3, ssm_conv_bias=True,
    ssm_drop_rate=0.0, ssm_init='v0', forward_type='v2', mlp_ratio=4.0,
    mlp_act_layer='gelu', mlp_drop_rate=0.0, gmlp=False, drop_path_rate=0.1,
    patch_norm=True, downsample_version='v2', patchembed_version='v1',
    use_checkpoint=False, posembed=False, imgsize=224)

# Keys the downstream configs merge in from their Swin base configs; VSSM swallows
# them (**kwargs) without effect, and so do we.
SWIN_LEFTOVERS = frozenset((
    'type', 'embed_dims', 'num_heads', 'window_size', 'qkv_bias', 'qk_scale', 'drop_rate',
    'attn_drop_rate', 'with_cp', 'convert_weights', 'init_cfg', 'pretrain_img_size',
    'strides', 'use_abs_pos_embed', 'act_cfg', 'norm_cfg'))

# forward_type cores that compute the SS2D of VMamba v2 (they differ only in kernels,
# einsum vs grouped conv, and fp32 forcing) and suffixes with no effect on the math.
_SS2D_CORES = ('v01', 'v02', 'v03', 'v04', 'v05', 'v2', 'v3')
_UNSUPPORTED_SUFFIXES = {
    '_oact': 'GELU on the SS2D output', '_nozact': 'a gate without SiLU',
    '_onnone': 'no out_norm', '_ondwconv3': 'a depthwise-conv out_norm',
    '_oncnorm': 'a LayerNorm + conv out_norm', '_onsoftmax': 'a softmax out_norm',
    '_onsigmoid': 'a sigmoid out_norm'}


def _strip(value: str, suffix: str):
    return (value[:-len(suffix)], True) if value.endswith(suffix) else (value, False)


def parse_forward_type(forward_type: str, channel_first: bool) -> Dict[str, Any]:
    """Official SS2D ``forward_type`` -> ``{'gated': bool, 'legacy_v0': bool}``.

    Suffixes are stripped from the end in the official order (``_no32``, ``_oact``,
    ``_noz``, ``_nozact``, then one out-norm suffix); only ``_no32`` (dtype policy)
    and ``_noz`` (no gate) are supported on top of the cores that compute the same
    function. ``'v0'``/``'v0seq'`` select the legacy SS2Dv0 (gated; channel-last only).
    """
    if not isinstance(forward_type, str):
        raise TypeError(f'VMamba: forward_type must be a string, got {forward_type!r}')
    if forward_type in ('v0', 'v0seq'):
        if channel_first:
            raise NotImplementedError(
                f"VMamba: forward_type={forward_type!r} (official SS2Dv0) only runs "
                "channel-last upstream (it asserts channel_first=False); use "
                "norm_layer='ln' with it")
        return dict(gated=True, legacy_v0=True)
    core = forward_type
    core, _ = _strip(core, '_no32')
    core, oact = _strip(core, '_oact')
    core, noz = _strip(core, '_noz')
    core, nozact = _strip(core, '_nozact')
    flags = {'_oact': oact, '_nozact': nozact}
    for suffix in ('_onnone', '_ondwconv3', '_oncnorm', '_onsoftmax', '_onsigmoid'):
        core, flags[suffix] = _strip(core, suffix)
    unsupported = [f'{s} ({_UNSUPPORTED_SUFFIXES[s]})' for s, on in flags.items() if on]
    if unsupported:
        raise NotImplementedError(f'VMamba: forward_type={forward_type!r} uses '
                                  f'{", ".join(unsupported)}, which mmssm does not implement')
    if core not in _SS2D_CORES:
        raise NotImplementedError(
            f'VMamba: forward_type={forward_type!r} (core {core!r}) is not implemented; '
            f"supported: 'v0', 'v0seq' and {', '.join(_SS2D_CORES)} with the optional "
            "suffixes '_noz' and '_no32' (e.g. the released 'v05_noz')")
    return dict(gated=not noz, legacy_v0=False)


def kwargs_from_official(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Official ``MM_VSSM(**config)`` kwargs -> ``mmssm.VMamba`` kwargs (explicit arch).

    Raises:
        NotImplementedError: for official options mmssm does not implement
            (posembed, gmlp, norm_layer 'bn', other forward types / activations,
            conv-free SS2D, the 'v1' SSM init, ...).
        ValueError: for values the official code cannot build either.
    """
    cfg = dict(OFFICIAL_DEFAULTS)
    unknown = sorted(set(config) - set(OFFICIAL_DEFAULTS) - SWIN_LEFTOVERS)
    if unknown:
        from mmengine.logging import print_log
        print_log(f'VMamba: ignoring official config keys {unknown} (the official VSSM '
                  'swallows unknown keyword arguments too)', logger='current', level=30)
    cfg.update({k: v for k, v in config.items() if k in OFFICIAL_DEFAULTS})

    def unsupported(what: str):
        raise NotImplementedError(f'VMamba: official option {what} is not implemented in '
                                  'mmssm.VMamba')

    if cfg['posembed']:
        unsupported('posembed=True (absolute position embedding)')
    if cfg['gmlp']:
        unsupported('gmlp=True (gated MLP)')
    norm_layer = str(cfg['norm_layer']).lower()
    if norm_layer not in ('ln', 'ln2d'):
        unsupported(f'norm_layer={cfg["norm_layer"]!r} (only "ln" and "ln2d")')
    channel_first = norm_layer == 'ln2d'
    ssm = parse_forward_type(cfg['forward_type'], channel_first)

    depths = [int(d) for d in cfg['depths']]
    dims = cfg['dims']
    dims = ([dims * 2**i for i in range(len(depths))] if isinstance(dims, int)
            else [int(d) for d in dims])
    out_indices = cfg['out_indices']
    out_indices = (out_indices, ) if isinstance(out_indices, int) else tuple(out_indices)
    if any(i < 0 for i in out_indices):
        raise ValueError(f'VMamba: official out_indices {out_indices} must be non-negative '
                         '(upstream builds outnorm{i} for them but never returns them)')
    if not out_indices:
        unsupported('out_indices=() (returning the last feature map alone)')

    ssm_ratio = float(cfg['ssm_ratio'])
    arch = dict(depths=depths, dims=dims, d_state=int(cfg['ssm_d_state']),
                ssm_ratio=ssm_ratio, dt_rank=cfg['ssm_dt_rank'],
                mlp_ratio=float(cfg['mlp_ratio']), gated=ssm['gated'],
                conv_bias=bool(cfg['ssm_conv_bias']), conv_kernel=int(cfg['ssm_conv']),
                patch_embed=cfg['patchembed_version'], downsample=cfg['downsample_version'],
                patch_size=int(cfg['patch_size']), patch_norm=bool(cfg['patch_norm']),
                ssm_init=cfg['ssm_init'], mlp_act=str(cfg['mlp_act_layer']).lower(),
                ssm_drop_rate=float(cfg['ssm_drop_rate']),
                mlp_drop_rate=float(cfg['mlp_drop_rate']),
                drop_path_rate=float(cfg['drop_path_rate']))
    if ssm['legacy_v0']:
        # SS2Dv0 hard-codes these whatever the config says.
        arch.update(conv_bias=True, conv_kernel=3, ssm_init='v0')
    elif ssm_ratio > 0:
        if str(cfg['ssm_act_layer']).lower() != 'silu':
            unsupported(f'ssm_act_layer={cfg["ssm_act_layer"]!r} (SS2D uses SiLU)')
        if arch['conv_kernel'] < 2:
            unsupported(f'ssm_conv={cfg["ssm_conv"]} (SS2D without its depthwise conv)')
        if arch['conv_kernel'] % 2 == 0:
            unsupported(f'ssm_conv={cfg["ssm_conv"]} (even kernels shrink the map upstream)')
        if arch['ssm_init'] not in ('v0', 'v2'):
            unsupported(f'ssm_init={cfg["ssm_init"]!r} (only "v0" and "v2")')
    if arch['dt_rank'] != 'auto':
        arch['dt_rank'] = int(arch['dt_rank'])
    if arch['patch_embed'] not in ('v1', 'v2'):
        raise ValueError(f'VMamba: unknown patchembed_version {cfg["patchembed_version"]!r}')
    if arch['downsample'] not in ('v1', 'v2', 'v3'):
        unsupported(f'downsample_version={cfg["downsample_version"]!r}')
    if arch['mlp_ratio'] <= 0:
        arch['mlp_act'] = 'gelu'  # unused without an MLP (the official code ignores it too)
    elif arch['mlp_act'] not in ('gelu', 'silu', 'relu', 'sigmoid'):
        raise ValueError(f'VMamba: unknown mlp_act_layer {cfg["mlp_act_layer"]!r}')

    kwargs = dict(arch=arch, in_channels=int(cfg['in_chans']), out_indices=out_indices,
                  with_cp=bool(cfg['use_checkpoint']))
    if cfg['pretrained']:
        # like the official wrapper: the ImageNet classifier is not used, the output
        # norms are new (declared: our loading is strict otherwise)
        kwargs['init_cfg'] = dict(type='Pretrained', checkpoint=cfg['pretrained'],
                                  drop_classifier=True, allow_missing=['outnorm*'])
    return kwargs


CONVERTER = FamilyConverter(
    name='vmamba',
    convert=convert,
    kwargs_from_official=kwargs_from_official,
    signature=signature,
)
