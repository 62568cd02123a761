"""Strict checkpoint loading: a checkpoint fills the model exactly, or nothing is loaded.

Every load into a model -- ``tools/test.py``, ``load_from``, ``--resume`` (through
:class:`mmssm.engine.StrictLoadHook`) and a backbone's ``init_cfg=dict(type='Pretrained')``
-- compares the checkpoint with the model first. Unless the rules say otherwise, any
model entry the checkpoint does not fill (*missing*), any checkpoint entry the model has
no place for (*unexpected*) and any entry whose shape differs (*mis-shaped*) stops the
load with :class:`IncompatibleCheckpointError`, which lists counts and the first names
and says how to accept the difference.

Deliberate differences are declared, never guessed (:class:`LoadRules`):

``allow_missing``
    patterns (:mod:`fnmatch`, ``*`` matches dots too) of model entries the checkpoint may
    leave at their initial values: the per-stage output norms a dense-prediction backbone
    adds to an ImageNet backbone (``'outnorm*'``), a detector's neck and heads when
    ``load_from`` is an ImageNet backbone (``'neck.*'``, ``'roi_head.*'``).
``allow_unexpected``
    patterns of checkpoint entries the model may ignore (Vim's ``'cls_token'`` for a
    dense backbone without class token).
``allow_resized``
    patterns of entries whose shape may differ because the model fits them to itself on
    load (Vim's ``'pos_embed'``, interpolated to the input grid).
``strict=False``
    accept anything (the tools' ``--non-strict``): what fits is loaded and the rest is
    reported as a warning.

This module imports nothing from mmssm (it sits below the models).
"""
import fnmatch
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from .fileio import preview

__all__ = ['LoadRules', 'StateDictDiff', 'IncompatibleCheckpointError', 'diff_state_dict',
           'check_state_dict', 'RULE_KEYS']

#: keys of a ``Pretrained`` init_cfg / StrictLoadHook that make :class:`LoadRules`
RULE_KEYS = ('strict', 'allow_missing', 'allow_unexpected', 'allow_resized')


class IncompatibleCheckpointError(RuntimeError):
    """The checkpoint does not fill the model exactly and the rules do not accept it."""


def _patterns(value: Any, name: str, owner: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value, )
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f'{owner}: {name} must be a pattern string or a list of them '
                        f"(e.g. ['outnorm*']), got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class LoadRules:
    """What a load may leave out (see the module docstring)."""
    strict: bool = True
    allow_missing: Tuple[str, ...] = ()
    allow_unexpected: Tuple[str, ...] = ()
    allow_resized: Tuple[str, ...] = ()

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], owner: str = 'load rules') -> 'LoadRules':
        """From the :data:`RULE_KEYS` entries of a config dict (others are ignored)."""
        strict = cfg.get('strict', True)
        if not isinstance(strict, bool):
            raise TypeError(f'{owner}: strict must be True or False, got {strict!r}')
        return cls(strict=strict, **{
            name: _patterns(cfg.get(name), name, owner)
            for name in ('allow_missing', 'allow_unexpected', 'allow_resized')})

    def describe(self) -> str:
        parts = [f'{name}={list(getattr(self, name))}'
                 for name in ('allow_missing', 'allow_unexpected', 'allow_resized')
                 if getattr(self, name)]
        return ', '.join(parts) if parts else 'nothing allowed'


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class StateDictDiff:
    """How a checkpoint differs from a model; ``mismatched`` holds ``(name, checkpoint
    shape, model shape)`` (entries the model fits to itself on load included)."""
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    loaded: int = 0
    total: int = 0

    def refused(self, rules: LoadRules) -> 'StateDictDiff':
        """The part of the difference that ``rules`` do not accept."""
        return StateDictDiff(
            missing=[k for k in self.missing if not _matches(k, rules.allow_missing)],
            unexpected=[k for k in self.unexpected
                        if not _matches(k, rules.allow_unexpected)],
            mismatched=[m for m in self.mismatched
                        if not _matches(m[0], rules.allow_resized)],
            loaded=self.loaded, total=self.total)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """``'N missing (a, b ...), M unexpected (...), K mis-shaped (...)'``."""
        parts = []
        if self.missing:
            parts.append(f'{len(self.missing)} missing ({preview(self.missing)})')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected ({preview(self.unexpected)})')
        if self.mismatched:
            shapes = [f'{k}: checkpoint {a} vs model {b}' for k, a, b in self.mismatched]
            parts.append(f'{len(self.mismatched)} mis-shaped ({preview(shapes, 3)})')
        return ', '.join(parts) if parts else 'no differences'


def diff_state_dict(model_state: Mapping[str, Any],
                    state_dict: Mapping[str, Any]) -> StateDictDiff:
    """Compare a checkpoint's state dict with a model's (``model.state_dict()``)."""
    diff = StateDictDiff(total=len(model_state))
    for key, value in model_state.items():
        if key not in state_dict:
            diff.missing.append(key)
            continue
        theirs = getattr(state_dict[key], 'shape', None)
        ours = getattr(value, 'shape', None)
        if theirs is not None and ours is not None and tuple(theirs) != tuple(ours):
            diff.mismatched.append((key, tuple(theirs), tuple(ours)))
        diff.loaded += 1
    diff.unexpected = [k for k in state_dict if k not in model_state]
    return diff


def check_state_dict(diff: StateDictDiff, rules: LoadRules, source: str, target: str,
                     accept: str, hint: Optional[str] = None) -> StateDictDiff:
    """Raise :class:`IncompatibleCheckpointError` if ``rules`` do not accept ``diff``.

    Args:
        diff: from :func:`diff_state_dict` (plus what the loading code adapted).
        rules: what is accepted.
        source: the checkpoint, for the message (``"checkpoint 'x.pth'"``).
        target: the model, for the message (``'RetinaNet'``).
        accept: how the user accepts the difference (``--non-strict``, init_cfg keys).
        hint: an extra line, e.g. which family the checkpoint looks like.

    Returns:
        The refused part (empty when everything is accepted or ``strict=False``).
    """
    refused = diff.refused(rules)
    if not refused or not rules.strict:
        return refused
    lines = [hint] if hint else []  # e.g. the checkpoint's family: the real cause
    lines.append(f'{source} does not fit {target}: {refused.summary()}. It has '
                 f'{diff.loaded} of the model\'s {diff.total} entries; nothing was loaded.')
    if rules.allow_missing or rules.allow_unexpected or rules.allow_resized:
        lines.append(f'Declared as deliberate (already accepted): {rules.describe()}.')
    lines.append(f'To accept this difference: {accept}')
    raise IncompatibleCheckpointError('\n'.join(lines))

