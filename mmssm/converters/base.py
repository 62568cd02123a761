"""Per-family converters: official checkpoints/configs -> mmssm backbones.

Each family module (``mmssm/converters/<family>.py``) calls :func:`register_family`
with a :class:`FamilyConverter`. The public entry points are

* :func:`convert_official` — official checkpoint contents -> mmssm backbone state dict;
* :func:`from_official`    — official downstream constructor kwargs (+ state dict)
  -> our backbone, configured identically, eval mode, weights loaded strictly;
* :func:`load_backbone_weights` — what ``init_cfg=dict(type='Pretrained')`` uses: an
  official or mmssm checkpoint into a built backbone, with a missing/unexpected report
  and an error when most keys fail.
"""
import importlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from ..fileio import preview as _preview
from .checkpoint import backbone_state_dict, extract_state_dict, strip_prefix

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]

FAMILIES = ('vmamba', 'msvmamba', 'efficientvmamba', 'mobilemamba', 'vim')


@dataclass
class FamilyConverter:
    """How one family's official artefacts map onto our backbone.

    Attributes:
        name: family name, one of :data:`FAMILIES`.
        backbone: our registry name, e.g. ``'VMamba'`` (built as ``mmssm.VMamba``).
        convert: official backbone state dict (no ``backbone.`` prefix, classifier
            keys possibly present) -> our state dict; drops classifier keys.
        kwargs_from_official: official downstream backbone constructor kwargs -> our
            constructor kwargs (raises on options we do not support).
        signature: predicate telling whether a state dict (official OR mmssm naming)
            belongs to this family; used to reject another family's checkpoint.
        container: checkpoint entry holding the weights if not found automatically
            (e.g. MobileMamba's ``'net'``); None for automatic search.
        prepare_model: optional ``(model, state_dict) -> state_dict`` called right
            before loading (by :func:`from_official` and :func:`load_backbone_weights`)
            to reconcile alternative layouts of one family, e.g. MobileMamba's
            BN-fused checkpoints (switches the model to deploy form, or fuses the
            state dict for an already deployed model).
    """
    name: str
    backbone: str
    convert: Callable[[StateDict], StateDict]
    kwargs_from_official: Callable[[Mapping[str, Any]], Dict[str, Any]]
    signature: Callable[[StateDict], bool]
    container: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    prepare_model: Optional[Callable[[nn.Module, StateDict], StateDict]] = None


_REGISTRY: Dict[str, FamilyConverter] = {}


def register_family(converter: FamilyConverter) -> FamilyConverter:
    if converter.name not in FAMILIES:
        raise ValueError(f'unknown family {converter.name!r}; expected one of {FAMILIES}')
    _REGISTRY[converter.name] = converter
    return converter


def get_family(family: str) -> FamilyConverter:
    if family not in FAMILIES:
        raise ValueError(f'unknown family {family!r}; expected one of {FAMILIES}')
    if family not in _REGISTRY:
        importlib.import_module(f'mmssm.converters.{family}')
    return _REGISTRY[family]


def detect_families(state_dict: StateDict) -> List[str]:
    """Families whose signature matches ``state_dict`` (official or mmssm naming)."""
    found = []
    for family in FAMILIES:
        try:
            converter = get_family(family)
        except ImportError:
            continue
        if converter.signature(state_dict):
            found.append(family)
    return found


def _check_family(family: str, state_dict: StateDict) -> None:
    converter = get_family(family)
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
    converter = get_family(family)
    container = converter.container
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
    return OrderedDict(get_family(family).convert(sd))


def build_backbone(family: str, kwargs: Mapping[str, Any]) -> nn.Module:
    from mmssm.registry import MODELS
    converter = get_family(family)
    return MODELS.build(dict(type=converter.backbone, **kwargs))


def from_official(family: str, config: Mapping[str, Any],
                  state_dict: Optional[Any] = None) -> nn.Module:
    """Build our backbone from the official downstream constructor kwargs.

    Args:
        family: one of :data:`FAMILIES`.
        config: keyword arguments of the official downstream backbone class
            (e.g. ``MM_VSSM(**config)``), as stored in the fixtures' ``config``.
        state_dict: optional official state dict / checkpoint contents; converted and
            loaded strictly (any missing, unexpected or mis-shaped key is an error).

    Returns:
        The backbone in eval mode; its forward returns what the official
        downstream wrapper returns.
    """
    converter = get_family(family)
    model = build_backbone(family, converter.kwargs_from_official(dict(config)))
    if state_dict is not None:
        converted = convert_official(family, state_dict)
        if converter.prepare_model is not None:
            converted = converter.prepare_model(model, converted)
        load_state_dict_checked(model, converted, strict=True,
                                source=f'official {family} checkpoint')
    return model.eval()


def _diff(model: nn.Module, state_dict: StateDict) -> Tuple[List[str], List[str], List[str]]:
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
    missing, unexpected, mismatched = _diff(model, state_dict)
    own_count = len(model.state_dict())
    if mismatched:
        raise RuntimeError(f'{source}: {len(mismatched)} shape mismatches for '
                           f'{type(model).__name__}: {_preview(mismatched, 5)}')
    if strict and (missing or unexpected):
        raise RuntimeError(
            f'{source} does not match {type(model).__name__} strictly: '
            f'{len(missing)} missing ({_preview(missing)}), '
            f'{len(unexpected)} unexpected ({_preview(unexpected)})')
    if own_count and len(missing) > own_count / 2:
        raise RuntimeError(
            f'{source}: only {own_count - len(missing)} of {own_count} entries of '
            f'{type(model).__name__} were found in the checkpoint (missing: '
            f'{_preview(missing)}; unexpected: {_preview(unexpected)}). Is it the right '
            'family/variant? Refusing to continue with mostly random weights.')
    model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        from mmengine.logging import print_log
        print_log(f'{source}: loaded into {type(model).__name__} with '
                  f'{len(missing)} missing keys ({_preview(missing)}) and '
                  f'{len(unexpected)} unexpected keys ({_preview(unexpected)})',
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
        converted = OrderedDict(get_family(family).convert(sd))
    except (KeyError, ValueError):
        if direct_hits == 0:
            raise
    if converted is not None and len(own & set(converted)) > direct_hits:
        sd = converted
    prepare = get_family(family).prepare_model
    if prepare is not None and converted is not None:
        sd = prepare(model, sd)
    return load_state_dict_checked(model, sd, strict=strict, source=source, logger=logger)
