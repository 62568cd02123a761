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
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmssm import families
from mmssm.fileio import load_checkpoint_file
from mmssm.loading import (IncompatibleCheckpointError, LoadRules, check_state_dict,
                           diff_state_dict)

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
                        strict: bool = True, logger=None, **options) -> Dict[str, List[str]]:
        """Read a checkpoint file (local path or any mmengine backend URI) safely and load
        it into ``model`` (see :func:`load_backbone_weights`, which also takes
        ``options``: ``rules``, ``revise_keys``, ``drop_classifier``); ``key`` picks a
        container explicitly (e.g. MobileMamba's EMA weights ``'net_E'``)."""
        from mmengine.fileio import get_local_path
        with get_local_path(filename) as local:
            contents = load_checkpoint_file(local, trust_pickle=trust_pickle)
        if key is not None:
            contents = extract_state_dict(contents, key)
        return load_backbone_weights(model, self.name, contents, prefix=prefix,
                                     strict=strict, source=f'checkpoint {filename!r}',
                                     logger=logger, **options)


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
                  state_dict: Optional[Any] = None, task: str = 'backbone') -> nn.Module:
    """Build our backbone (or classifier) from the official constructor kwargs.

    Args:
        family: a family key of :mod:`mmssm.families`.
        config: keyword arguments of the official downstream backbone class
            (e.g. ``MM_VSSM(**config)``), or with ``task='cls'`` of the official
            classification model (e.g. ``VSSM(**config)``), as stored in the fixtures'
            ``config``.
        state_dict: optional official state dict / checkpoint contents; converted and
            loaded strictly (any missing, unexpected or mis-shaped key is an error).
        task: ``'backbone'``, or ``'cls'`` for the whole classifier (an mmpretrain
            ``ImageClassifier``, :mod:`mmssm.converters.classification`).

    Returns:
        The model in eval mode; its forward returns what the official downstream
        wrapper (backbone) or classification model (logits) returns.
    """
    if task == 'cls':
        from .classification import classifier_from_official
        return classifier_from_official(family, config, state_dict)
    if task != 'backbone':
        raise ValueError(f"from_official: task must be 'backbone' or 'cls', got {task!r}")
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
    a mis-shaped entry is described as ``'key: checkpoint (shape) vs model (shape)'``
    (:func:`mmssm.loading.diff_state_dict` as plain lists)."""
    diff = diff_state_dict(model.state_dict(), state_dict)
    mismatched = [f'{k}: checkpoint {a} vs model {b}' for k, a, b in diff.mismatched]
    return diff.missing, diff.unexpected, mismatched


#: how a backbone's Pretrained init_cfg accepts a difference (IncompatibleCheckpointError)
ACCEPT_INIT_CFG = (
    "declare the deliberate parts in the backbone's init_cfg: allow_missing=[...] (model "
    'entries left at their initialisation, e.g. the output norms a dense backbone adds), '
    'allow_unexpected=[...], allow_resized=[...] (entries the model fits to itself, e.g. '
    "Vim's pos_embed), drop_classifier=True (an ImageNet classifier the dense backbone "
    'has no place for); or strict=False to load what fits (docs/security.md)')


def load_state_dict_checked(model: nn.Module, state_dict: StateDict, strict: bool = True,
                            source: str = 'checkpoint', logger=None,
                            rules: Optional[LoadRules] = None,
                            extra_unexpected: Sequence[str] = (),
                            extra_mismatched: Sequence[Tuple[str, tuple, tuple]] = (),
                            accept: str = ACCEPT_INIT_CFG) -> Dict[str, List[str]]:
    """Load ``state_dict`` into ``model`` if it fits exactly or ``rules`` accept the
    difference (:mod:`mmssm.loading`); otherwise raise
    :class:`~mmssm.loading.IncompatibleCheckpointError` before anything is loaded.

    ``rules`` default to ``LoadRules(strict=strict)``. ``extra_unexpected`` /
    ``extra_mismatched`` are differences the caller already resolved on its own (entries
    a converter dropped, entries a family resized) that the rules must still accept.
    With ``strict=False`` what fits is loaded and the rest is logged as a warning; a
    checkpoint of which nothing fits is an error even then.
    """
    rules = rules if rules is not None else LoadRules(strict=strict)
    own = model.state_dict()
    diff = diff_state_dict(own, state_dict)
    diff.unexpected += list(extra_unexpected)
    diff.mismatched += list(extra_mismatched)
    target = type(model).__name__
    refused = check_state_dict(diff, rules, source, target, accept)
    fitting = OrderedDict((k, v) for k, v in state_dict.items()
                          if k in own and tuple(v.shape) == tuple(own[k].shape))
    if own and not fitting:
        raise IncompatibleCheckpointError(
            f'{source}: none of its {len(state_dict)} entries fits {target} '
            f'({diff.summary()}); is it a checkpoint of this model?')
    model.load_state_dict(fitting, strict=False)
    if refused:
        from mmengine.logging import print_log
        print_log(f'{source}: loaded into {target} with strict=False: {refused.summary()}',
                  logger=logger or 'current', level=30)
    return dict(missing=diff.missing, unexpected=diff.unexpected)


def _dropped_by_converter(state_dict: StateDict, converted: StateDict) -> List[str]:
    """Entries of ``state_dict`` (official names) that the family converter removed (its
    ImageNet classifier). Converters rename entries and reshape some into views but
    never copy them, so an entry survives iff a converted tensor is it or a view of it."""
    def root(t: Tensor) -> int:
        return id(t._base if t._base is not None else t)

    kept = {root(v) for v in converted.values() if isinstance(v, Tensor)}
    return [k for k, v in state_dict.items() if isinstance(v, Tensor) and root(v) not in kept]


def load_backbone_weights(model: nn.Module, family: str, checkpoint: Any,
                          prefix: Optional[str] = None, strict: bool = True,
                          source: str = 'checkpoint', logger=None,
                          rules: Optional[LoadRules] = None,
                          revise_keys: Sequence[Tuple[str, str]] = (),
                          drop_classifier: bool = False) -> Dict[str, List[str]]:
    """Load an official or mmssm checkpoint (loaded contents) into ``model``, strictly
    unless ``rules`` (:class:`mmssm.loading.LoadRules`) declare what may differ.

    The format is detected by which interpretation fills more of the model: the
    keys as they are (mmssm checkpoints, e.g. written by our converters or by
    mmdet/mmseg training with ``prefix='backbone.'``) or after ``convert_official``.
    ``revise_keys`` are mmengine's ``(pattern, replacement)`` renames, applied after the
    prefix is selected. A checkpoint of another family is refused by that family's name.
    What the family's converter removes (an official ImageNet classifier) and what its
    ``prepare_model`` drops or resizes (Vim's class token and ``pos_embed``) count as
    differences too: ``drop_classifier=True`` accepts the former, ``rules`` the latter.
    """
    rules = rules if rules is not None else LoadRules(strict=strict)
    sd = extract_state_dict(checkpoint, None)
    sd = strip_prefix(sd, prefix) if prefix else backbone_state_dict(sd)
    for pattern, replacement in revise_keys:
        sd = OrderedDict((re.sub(pattern, replacement, k), v) for k, v in sd.items())
    if not sd:
        raise RuntimeError(f'{source}: no weights left after selecting prefix {prefix!r}')
    detected = detect_families(sd)
    if detected and family not in detected:
        _check_family(family, sd)  # raises: "this checkpoint looks like a '<family>' ..."
    own = set(model.state_dict())
    direct_hits = len(own & set(sd))
    converted = None
    try:
        _check_family(family, sd)
        converted = OrderedDict(get_converter(family).convert(sd))
    except (KeyError, ValueError):
        if direct_hits == 0:
            raise
    dropped: List[str] = []
    if converted is not None and len(own & set(converted)) >= direct_hits:
        dropped = _dropped_by_converter(sd, converted)
        sd = converted
    before = sd
    prepare = get_converter(family).prepare_model
    if prepare is not None and converted is not None:
        sd = prepare(model, OrderedDict(sd))
    # learned entries the preparation fitted to the model (buffers such as Vim's rope
    # tables are functions of the configuration: replacing them changes nothing learned)
    learned = dict(model.named_parameters())
    resized = [(k, tuple(before[k].shape), tuple(sd[k].shape)) for k in before
               if k in sd and k in learned and tuple(before[k].shape) != tuple(sd[k].shape)]
    # entries the preparation removed without creating others (a fused layout adds some)
    removed = [k for k in before if k not in sd] if set(sd) <= set(before) else []
    classifier = [] if drop_classifier else [f'{k} (classifier, removed by the {family} '
                                             'converter)' for k in dropped]
    return load_state_dict_checked(model, sd, source=source, logger=logger, rules=rules,
                                   extra_unexpected=classifier + removed,
                                   extra_mismatched=resized)
