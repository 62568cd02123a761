"""Loading checkpoint files safely and unwrapping their state dicts.

Official checkpoints embed non-tensor objects: yacs ``CfgNode`` (VMamba family),
``argparse.Namespace`` (Vim), mmengine ``HistoryBuffer``/numpy scalars (mmdet/mmseg
full checkpoints). torch >= 2.6 refuses these under its default ``weights_only=True``.
Instead of falling back to unrestricted unpickling (which executes whatever the file
names), :func:`load_checkpoint_file` keeps ``weights_only=True`` and allow-lists
stand-in classes for the known upstream globals: a stand-in records the object's
fields as plain data but has no behaviour, so nothing from the file is executed.
Unknown globals are an error that names them; ``trust_pickle=True`` (a CLI's
``--trust-pickle``) is the explicit opt-in to a full unpickle of a trusted file.
"""
import os
import re
from collections import OrderedDict
from typing import Any, Dict, Iterable, Optional

import torch

Tensor = torch.Tensor


class OpaqueObject:
    """Inert stand-in for a pickled upstream object (argparse args, log buffers).

    It accepts the pickle protocol's construction and state-setting calls and keeps
    the data it is given as attributes, but has none of the original class's methods.
    """

    def __init__(self, *args, **kwargs):
        self.args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.state = state

    def __repr__(self):
        return f'{type(self).__name__}({self.__dict__})'


# Upstream dict subclasses (config nodes) are rebuilt as OrderedDict: torch's restricted
# unpickler can fill only built-in mappings, and the data is all we need.
_MAPPING_GLOBALS = (
    'yacs.config.CfgNode',  # VMamba / MSVMamba / EfficientVMamba classification ckpts
    'mmengine.config.config.ConfigDict',
    'mmcv.utils.config.ConfigDict',  # mmcv 1.x / mmseg 0.x (Vim segmentation ckpts)
    'addict.addict.Dict',
)
# Plain objects kept as inert stand-ins.
_OBJECT_GLOBALS = (
    'argparse.Namespace',  # Vim classification ckpts ('args')
    'mmengine.logging.history_buffer.HistoryBuffer',  # mmengine full ckpts
    'pathlib.PosixPath',
)
# numpy constructors found in mmengine/mmdet meta data: safe to allow as they are.
_NUMPY_GLOBALS = (
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy', 'dtype'), ('numpy', 'ndarray'),
)
KNOWN_UPSTREAM_GLOBALS = _MAPPING_GLOBALS + _OBJECT_GLOBALS + tuple(
    f'{m}.{n}' for m, n in _NUMPY_GLOBALS) + ('builtins.getattr', )

_GLOBAL_RE = re.compile(r'GLOBAL ([\w.]+)')


def _inert_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` during safe loading.

    mmengine's ``HistoryBuffer`` (in every full mmengine checkpoint's ``message_hub``)
    pickles its statistics methods as ``getattr(HistoryBuffer, 'min')``. Only attribute
    look-ups on the inert stand-ins are answered, with a descriptive string; anything
    else is refused, since a real getattr on an allow-listed object could reach methods
    with side effects (e.g. ``ndarray.tofile``).
    """
    owner = obj if isinstance(obj, type) else type(obj)
    if issubclass(owner, OpaqueObject) and isinstance(name, str):
        return f'<{owner.__name__}.{name}>'
    raise RuntimeError(f'checkpoint asks for getattr({owner.__name__}, {name!r}); only '
                       'attributes of allow-listed upstream objects are resolved')


def _allow_list():
    allow = [(OrderedDict, name) for name in _MAPPING_GLOBALS]
    allow += [(type(name.rsplit('.', 1)[-1], (OpaqueObject, ), {}), name)
              for name in _OBJECT_GLOBALS]
    allow.append((set, 'builtins.set'))
    allow.append((_inert_getattr, 'builtins.getattr'))
    try:
        import numpy as np
        for module, attr in _NUMPY_GLOBALS:
            target = np
            for part in module.split('.')[1:] + [attr]:
                target = getattr(target, part, None)
                if target is None:
                    break
            if target is not None:
                allow.append((target, f'{module}.{attr}'))
        allow += [(type(np.dtype(t)), f'numpy.dtypes.{type(np.dtype(t)).__name__}')
                  for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    except ImportError:  # numpy-free environments only lose numpy metadata support
        pass
    return allow


def load_checkpoint_file(path: str, trust_pickle: bool = False,
                         map_location: Any = 'cpu') -> Any:
    """Load a checkpoint file without executing arbitrary pickled code.

    Args:
        path: file path.
        trust_pickle: fall back to ``torch.load(weights_only=False)`` — only for files
            you trust, because unpickling can run arbitrary code.
        map_location: forwarded to :func:`torch.load`.

    Returns:
        Whatever the file holds, with upstream objects replaced by
        :class:`OpaqueObject` stand-ins (tensors untouched).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}')
    if trust_pickle:
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(_allow_list()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with guidance below
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - only used to improve the message
            unsafe = _GLOBAL_RE.findall(str(err))
        unknown = sorted(set(unsafe) - set(KNOWN_UPSTREAM_GLOBALS) - {'builtins.set'})
        detail = (f'it references objects outside the allow-list: {", ".join(unknown)}'
                  if unknown else str(err).strip().splitlines()[0])
        raise RuntimeError(
            f'could not load {path!r} safely: {detail}.\n'
            'mmssm loads checkpoints with torch.load(weights_only=True) plus an allow-list '
            'of known upstream objects. If you trust this file, retry with '
            'trust_pickle=True (CLI: --trust-pickle), which unpickles it fully and can '
            'run code embedded in the file.') from err


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
