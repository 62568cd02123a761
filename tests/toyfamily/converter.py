"""ToyMamba's "official" layout: ``patch_embed.*`` for our ``stem.*``, ``layers.i.*`` for
``stages.i.*`` and a classifier ``head.*`` that the backbone drops."""
import re
from collections import OrderedDict
from typing import Any, Dict, Mapping

from mmssm.converters import FamilyConverter

_LAYER = re.compile(r'^layers\.(\d+)\.')


def signature(state_dict: Mapping[str, Any]) -> bool:
    """Official (``patch_embed.weight`` + ``layers.0.0.op.A_logs``) or ours
    (``stem.weight`` + ``stages.0.0.op.A_logs``)."""
    return (('patch_embed.weight' in state_dict and 'layers.0.0.op.A_logs' in state_dict)
            or ('stem.weight' in state_dict and 'stages.0.0.op.A_logs' in state_dict))


def convert(state_dict: Mapping[str, Any]) -> 'OrderedDict[str, Any]':
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head.'):
            continue
        key = key.replace('patch_embed.', 'stem.', 1) if key.startswith('patch_embed.') else key
        out[_LAYER.sub(r'stages.\1.', key)] = value
    return out


def kwargs_from_official(config: Mapping[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(config) - {'dims', 'depths', 'd_state', 'in_chans'})
    if unknown:
        raise NotImplementedError(f'ToyMamba: official options {unknown} are not supported')
    arch = dict(dims=tuple(config['dims']), depths=tuple(config['depths']),
                d_state=int(config.get('d_state', 2)))
    return dict(arch=arch, in_channels=int(config.get('in_chans', 3)))


CONVERTER = FamilyConverter(name='toymamba', convert=convert,
                            kwargs_from_official=kwargs_from_official, signature=signature)
