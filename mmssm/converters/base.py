"""Per-family converters: official checkpoints/configs -> mmssm backbones.

Each family's converter module (``mmssm/converters/<family>.py``, named by the family's
record in :mod:`mmssm.families`) defines ``CONVERTER``, a :class:`FamilyConverter`. The
public entry points are

* :func:`convert_official` -- official checkpoint contents -> mmssm backbone state dict;
* :func:`from_official`    -- official downstream constructor kwargs (+ state dict)
  -> our backbone, configured identically, eval mode, weights loaded strictly;
* :meth:`FamilyConverter.load_checkpoint` -- the one way a checkpoint file reaches a
  built backbone: what the backbones' ``init_weights`` (``init_cfg=dict(type=
  'Pretrained')``) calls through the family registry; an official or mmssm checkpoint,
  with a missing/unexpected report and an error when most keys fail.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from mmssm import families
from mmssm.fileio import load_checkpoint_file, preview

from .checkpoint import backbone_state_dict, extract_state_dict, strip_prefix

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]


class ConversionError(RuntimeError):
    """An official checkpoint cannot be turned into one that loads strictly."""


@dataclass
class FamilyConverter:
    """How one family's official artefacts map onto our backbone.

    Attributes:
        name: the family's key in :mod:`mmssm.families`.
        convert: official backbone state dict (no ``backbone.`` prefix, classifier
            keys possibly present) -> our state dict; drops classifier keys.
        kwargs_from_official: official downstream backbone constructor kwargs -> our
            constructor kwargs (raises on options we do not support).
        signature: predicate telling whether a state dict (official OR mmssm naming)
            belongs to this family; used to reject another family's checkpoint.
        container: checkpoint entry holding the weights if not found automatically
            (e.g. MobileMamba's ``'net'``); None for automatic search.
        prepare_model: optional ``(model, state_dict) -> state_dict`` called right
            before loading (by :func:`from_official` and :meth:`load_checkpoint`)
            to reconcile alternative layouts of one family, e.g. MobileMamba's
            BN-fused checkpoints (switches the model to deploy form, or fuses the
            state dict for an already deployed model).
        detectron2_stride: for families with detectron2 (ViTDet) detector
            checkpoints: ``(converted backbone state dict) -> stride`` of the plain
            backbone's map, which names the levels of its simple feature pyramid; None
            (default) means the family has no such checkpoints and they are refused.
        unread_entries: optional ``(built backbone) -> {key: why}``: entries of the
            backbone that its forward never reads in this configuration and that
            official downstream checkpoints may lack (Vim's detection wrapper deletes
            ``norm_f``); the detector/segmentor converter fills them from the model and
            reports them, and config inference does not count them as missing.
    """
    name: str
    convert: Callable[[StateDict], StateDict]
    kwargs_from_official: Callable[[Mapping[str, Any]], Dict[str, Any]]
    signature: Callable[[StateDict], bool]
    container: Optional[str] = None
    prepare_model: Optional[Callable[[nn.Module, StateDict], StateDict]] = None
    detectron2_stride: Optional[Callable[[StateDict], int]] = None
    unread_entries: Optional[Callable[[nn.Module], Dict[str, str]]] = None

    def load_checkpoint(self, model: nn.Module, filename: str, prefix: Optional[str] = None,
                        key: Optional[str] = None, trust_pickle: bool = False,
                        strict: bool = False, logger=None) -> Dict[str, List[str]]:
        """Read a checkpoint file (local path or any mmengine backend URI) safely and load
        it into ``model`` (see :func:`load_backbone_weights`); ``key`` picks a container
        explicitly (e.g. MobileMamba's EMA weights ``'net_E'``)."""
        from mmengine.fileio import get_local_path
        with get_local_path(filename) as local:
            contents = load_checkpoint_file(local, trust_pickle=trust_pickle)
        if key is not None:
            contents = extract_state_dict(contents, key)
        return load_backbone_weights(model, self.name, contents, prefix=prefix,
                                     strict=strict, source=f'checkpoint {filename!r}',
                                     logger=logger)


def get_converter(family: str) -> FamilyConverter:
    """The converter of a registered family."""
    return families.get(family).converter()


def detect_families(state_dict: StateDict) -> List[str]:
    """Families whose signature matches ``state_dict`` (official or mmssm naming)."""
    return [name for name in families.names() if get_converter(name).signature(state_dict)]


def _check_family(family: str, state_dict: StateDict) -> None:
    converter = get_converter(family)
    if converter.signature(state_dict):
        return
    others = [f for f in detect_families(state_dict) if f != family]
    if others:
        raise ValueError(f'this checkpoint looks like a {others[0]!r} checkpoint, not '
                         f'{family!r}; use the {others[0]} converter/backbone')
    sample = ', '.join(list(state_dict)[:5])
    raise ValueError(f'this checkpoint does not look like an official {family!r} '
                     f'backbone (first keys: {sample})')


def official_backbone_state_dict(family: str, checkpoint: Any) -> 'OrderedDict[str, Tensor]':
    """Tensors of the backbone inside loaded checkpoint contents (any wrapping)."""
    container = get_converter(family).container
    if container is not None and not (isinstance(checkpoint, dict) and container in checkpoint):
        container = None
    return backbone_state_dict(extract_state_dict(checkpoint, container))


def convert_official(family: str, state_dict: Any) -> 'OrderedDict[str, Tensor]':
    """Official checkpoint contents -> our backbone's state dict.

    Accepts a bare state dict or the whole loaded checkpoint (nested under
    ``model``/``state_dict``/``net``/``module.``; detector/segmentor checkpoints with
    ``backbone.`` prefixes keep only the backbone). Classifier keys are dropped.
    """
    sd = official_backbone_state_dict(family, state_dict)
    _check_family(family, sd)
    return OrderedDict(get_converter(family).convert(sd))


def from_official(family: str, config: Mapping[str, Any],
                  state_dict: Optional[Any] = None) -> nn.Module:
    """Build our backbone from the official downstream constructor kwargs.

    Args:
        family: a family key of :mod:`mmssm.families`.
        config: keyword arguments of the official downstream backbone class
            (e.g. ``MM_VSSM(**config)``), as stored in the fixtures' ``config``.
        state_dict: optional official state dict / checkpoint contents; converted and
            loaded strictly (any missing, unexpected or mis-shaped key is an error).

    Returns:
        The backbone in eval mode; its forward returns what the official
        downstream wrapper returns.
    """
    converter = get_converter(family)
    model = families.build_backbone(family, **converter.kwargs_from_official(dict(config)))
    if state_dict is not None:
        converted = convert_official(family, state_dict)
        if converter.prepare_model is not None:
            converted = converter.prepare_model(model, converted)
        load_state_dict_checked(model, converted, strict=True,
                                source=f'official {family} checkpoint')
    return model.eval()


def state_dict_diff(model: nn.Module, state_dict: Mapping[str, Tensor]
                    ) -> Tuple[List[str], List[str], List[str]]:
    """(missing, unexpected, mis-shaped) entries of ``state_dict`` against ``model``;
    a mis-shaped entry is described as ``'key: checkpoint (shape) vs model (shape)'``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
        for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    return missing, unexpected, mismatched


def load_state_dict_checked(model: nn.Module, state_dict: StateDict, strict: bool = True,
                            source: str = 'checkpoint', logger=None) -> Dict[str, List[str]]:
    """Load with a report. Mis-shaped keys are always an error; with ``strict`` any
    missing/unexpected key is too; without it, a load that fills fewer than half of
    the model's entries is an error and the rest is reported as a warning."""
    missing, unexpected, mismatched = state_dict_diff(model, state_dict)
    own_count = len(model.state_dict())
    if mismatched:
        raise RuntimeError(f'{source}: {len(mismatched)} shape mismatches for '
                           f'{type(model).__name__}: {preview(mismatched, 5)}')
    if strict and (missing or unexpected):
        raise RuntimeError(
            f'{source} does not match {type(model).__name__} strictly: '
            f'{len(missing)} missing ({preview(missing)}), '
            f'{len(unexpected)} unexpected ({preview(unexpected)})')
    if own_count and len(missing) > own_count / 2:
        raise RuntimeError(
            f'{source}: only {own_count - len(missing)} of {own_count} entries of '
            f'{type(model).__name__} were found in the checkpoint (missing: '
            f'{preview(missing)}; unexpected: {preview(unexpected)}). Is it the right '
            'family/variant? Refusing to continue with mostly random weights.')
    model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        from mmengine.logging import print_log
        print_log(f'{source}: loaded into {type(model).__name__} with '
                  f'{len(missing)} missing keys ({preview(missing)}) and '
                  f'{len(unexpected)} unexpected keys ({preview(unexpected)})',
                  logger=logger or 'current', level=30)
    return dict(missing=missing, unexpected=unexpected)


def load_backbone_weights(model: nn.Module, family: str, checkpoint: Any,
                          prefix: Optional[str] = None, strict: bool = False,
                          source: str = 'checkpoint', logger=None) -> Dict[str, List[str]]:
    """Load an official or mmssm checkpoint (loaded contents) into ``model``.

    The format is detected by which interpretation fills more of the model: the
    keys as they are (mmssm checkpoints, e.g. written by our converters or by
    mmdet/mmseg training with ``prefix='backbone.'``) or after ``convert_official``.
    """
    sd = extract_state_dict(checkpoint, None)
    sd = strip_prefix(sd, prefix) if prefix else backbone_state_dict(sd)
    if not sd:
        raise RuntimeError(f'{source}: no weights left after selecting prefix {prefix!r}')
    own = set(model.state_dict())
    direct_hits = len(own & set(sd))
    converted = None
    try:
        _check_family(family, sd)
        converted = OrderedDict(get_converter(family).convert(sd))
    except (KeyError, ValueError):
        if direct_hits == 0:
            raise
    if converted is not None and len(own & set(converted)) > direct_hits:
        sd = converted
    prepare = get_converter(family).prepare_model
    if prepare is not None and converted is not None:
        sd = prepare(model, sd)
    return load_state_dict_checked(model, sd, strict=strict, source=source, logger=logger)
