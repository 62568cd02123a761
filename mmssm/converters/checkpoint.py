"""Unwrapping the state dicts inside loaded checkpoint contents.

Files are read by :func:`mmssm.fileio.load_checkpoint_file` (safe loading, the per-file
opt-in); this module only selects and renames what they hold.
"""
from collections import OrderedDict
from typing import Any, Dict, Iterable, Optional

import torch

Tensor = torch.Tensor


# Containers under which upstream checkpoints nest their weights, in priority order.
# 'model' (VMamba family, Vim; non-EMA weights by the official loaders), 'state_dict'
# (mmengine/mmdet/mmseg), 'net' / 'net_E' (MobileMamba trainer: weights / EMA weights).
STATE_DICT_CONTAINERS = ('state_dict', 'model', 'net', 'module', 'net_E', 'model_ema')


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) for k in obj) and any(isinstance(v, Tensor) for v in obj.values())


def extract_state_dict(checkpoint: Any, key: Optional[str] = None) -> 'OrderedDict[str, Tensor]':
    """Find the weights in loaded checkpoint contents and return tensors only.

    Args:
        checkpoint: a state dict, or a dict nesting one under ``key`` or one of
            :data:`STATE_DICT_CONTAINERS` (searched in that order, recursively).
        key: pick this container explicitly (e.g. ``'net_E'`` for MobileMamba EMA
            weights); an error if absent.

    Non-tensor entries (e.g. a ``num_batches_tracked`` stored as int) are dropped only
    if they are not tensors; a leading ``module.`` (DataParallel) is removed.
    """
    obj = checkpoint
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise KeyError(f'checkpoint has no {key!r} entry (it has {have})')
        obj = obj[key]
    for _ in range(4):
        if _is_state_dict(obj) and not any(
                isinstance(obj.get(c), dict) for c in STATE_DICT_CONTAINERS):
            break
        if not isinstance(obj, dict):
            break
        nested = next((obj[c] for c in STATE_DICT_CONTAINERS
                       if isinstance(obj.get(c), dict)), None)
        if nested is None:
            break
        obj = nested
    if not _is_state_dict(obj):
        have = sorted(obj)[:12] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f'no state dict found in the checkpoint (top-level entries: {have})')
    out = OrderedDict()
    for name, value in obj.items():
        if not isinstance(value, Tensor):
            continue
        if name.startswith('module.'):
            name = name[len('module.'):]
        out[name] = value
    return out


def strip_prefix(state_dict: Dict[str, Tensor], prefix: str,
                 only_prefixed: bool = True) -> 'OrderedDict[str, Tensor]':
    """Keep the entries under ``prefix`` (e.g. ``'backbone.'``) with it removed.

    With ``only_prefixed=False``, entries without the prefix are kept unchanged.
    """
    out = OrderedDict()
    for name, value in state_dict.items():
        if name.startswith(prefix):
            out[name[len(prefix):]] = value
        elif not only_prefixed:
            out[name] = value
    return out


def backbone_state_dict(state_dict: Dict[str, Tensor],
                        prefixes: Iterable[str] = ('backbone.', )) -> 'OrderedDict[str, Tensor]':
    """If the keys come from a detector/segmentor (``backbone.*``), keep only those,
    unprefixed; otherwise return the keys unchanged (a classification checkpoint)."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state_dict):
            return strip_prefix(state_dict, prefix)
    return OrderedDict(state_dict)
