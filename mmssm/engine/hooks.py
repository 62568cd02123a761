"""Hooks mmssm's tools add to every run."""
import re
from collections import OrderedDict
from typing import Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmssm.loading import LoadRules, check_state_dict, diff_state_dict
from mmssm.registry import HOOKS

Patterns = Optional[Union[str, Sequence[str]]]

ACCEPT = ("pass --non-strict to tools/test.py or tools/train.py, or declare the deliberate "
          "parts in the config: custom_hooks = [dict(type='mmssm.StrictLoadHook', "
          "allow_missing=[...], allow_unexpected=[...], allow_resized=[...])] "
          '(patterns of entry names; see docs/security.md)')


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Stop ``load_from``, ``--resume`` and ``tools/test.py`` when the checkpoint does not
    fill the model exactly.

    mmengine's Runner loads those checkpoints with ``strict=False``: missing, unexpected
    and mis-shaped entries are only logged, so a test evaluates a partly random model and
    a run "fine-tunes" from scratch. This hook checks the checkpoint right after it is
    read (``after_load_checkpoint``, before anything is copied into the model) and raises
    :class:`mmssm.loading.IncompatibleCheckpointError` with the counts, the first names,
    the checkpoint's family when it is another backbone family's, and how to accept it.
    ``tools/train.py`` and ``tools/test.py`` add it to every config (``--non-strict``
    sets ``strict=False``: the report becomes a warning); other scripts add it to
    ``custom_hooks``.

    Args:
        strict: refuse differences the rules below do not accept.
        allow_missing: model entries the checkpoint may leave at their initial values,
            e.g. ``['neck.*', 'rpn_head.*', 'roi_head.*']`` for ``load_from`` an
            ImageNet backbone checkpoint saved with a ``backbone.`` prefix.
        allow_unexpected: checkpoint entries the model may ignore.
        allow_resized: entries the model fits to its own shape on load (Vim's
            ``'backbone.pos_embed'`` at another input size).
    """
    priority = 'VERY_LOW'  # after hooks that rewrite the checkpoint (e.g. EMA swaps)

    def __init__(self, strict: bool = True, allow_missing: Patterns = None,
                 allow_unexpected: Patterns = None, allow_resized: Patterns = None):
        self.rules = LoadRules.from_cfg(
            dict(strict=strict, allow_missing=allow_missing,
                 allow_unexpected=allow_unexpected, allow_resized=allow_resized),
            owner=type(self).__name__)

    @staticmethod
    def _source(runner) -> str:
        path = getattr(runner, '_load_from', None)
        if path is None and getattr(runner, '_resume', False):
            from mmengine.runner import find_latest_checkpoint
            path = find_latest_checkpoint(runner.work_dir)
        return f'checkpoint {path!r}' if path else 'the checkpoint'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state_dict = checkpoint.get('state_dict', checkpoint)
        # what mmengine's Runner.load_checkpoint then loads (revise_keys default)
        state_dict = OrderedDict((re.sub(r'^module\.', '', k), v)
                                 for k, v in state_dict.items())
        diff = diff_state_dict(model.state_dict(), state_dict)
        refused = check_state_dict(diff, self.rules, self._source(runner),
                                   type(model).__name__, ACCEPT,
                                   hint=family_hint(model, state_dict) if diff else None)
        if refused:  # strict=False
            print_log(f'{self._source(runner)} loaded non-strictly into '
                      f'{type(model).__name__}: {refused.summary()}', logger='current',
                      level=30)


def family_hint(model, state_dict) -> Optional[str]:
    """'This looks like a <family> checkpoint ...' when the checkpoint's backbone is of
    another mmssm family than the model's backbone."""
    backbone = getattr(model, 'backbone', None)
    family = getattr(backbone, 'family', None)
    if not family:
        return None
    from mmssm import families
    from mmssm.converters import backbone_state_dict, detect_families
    detected = detect_families(backbone_state_dict(state_dict))
    if not detected or family in detected:
        return None
    names = ' or '.join(families.get(f).backbone for f in detected)
    return (f'This looks like a {names} checkpoint; the model\'s backbone is '
            f'{families.get(family).backbone}.')
