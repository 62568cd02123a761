"""detectron2 (ViTDet) detector checkpoints: neck and head names -> mmdet / mmssm names.

Vim's Cascade Mask R-CNN was trained with detectron2. Its ViTDet trunk ``backbone.net.*``
goes through the family converter (:mod:`mmssm.converters.detseg`); what is left is
mapped here: the simple feature pyramid ``backbone.simfp_<level>.*`` becomes mmssm's
``SimpleFPN`` (``neck.stages.i``), the RPN and the (cascade) box/mask heads get mmdet's
names (:data:`DETECTRON2_RULES`); detectron2's single cascade mask head is copied into
each of mmdet's per-stage mask heads (identical heads: mmdet's test-time average of their
sigmoids is the single head's output).
"""
import re
from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

from .base import ConversionError

Tensor = torch.Tensor

# (pattern, replacement) on detectron2 names. A replacement with ``\1`` is a regex
# template; a bare word names a rule of :func:`_d2_head_key`, which needs the target
# model's keys (the norm sub-module name of an mmcv ConvModule -- ``ln`` for LN2d, ``gn``,
# ``bn`` -- and the number of cascade stages).
_FIELD = r'(weight|bias)'
_NORM_FIELD = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_STAGE = r'(?:(\d+)\.)?'
DETECTRON2_RULES = (
    (r'proposal_generator\.rpn_head\.conv\.conv(\d+)\.' + _FIELD,
     r'rpn_head.rpn_conv.\1.conv.\2'),
    (r'proposal_generator\.rpn_head\.conv\.' + _FIELD, r'rpn_head.rpn_conv.\1'),
    (r'proposal_generator\.rpn_head\.objectness_logits\.' + _FIELD, r'rpn_head.rpn_cls.\1'),
    (r'proposal_generator\.rpn_head\.anchor_deltas\.' + _FIELD, r'rpn_head.rpn_reg.\1'),
    # box heads: convK (+ convK.norm) -> shared_convs.K-1.{conv,<norm>}; fcK -> shared_fcs.K-1
    (r'roi_heads\.box_head\.' + _STAGE + r'conv(\d+)\.' + _FIELD, 'bbox_conv'),
    (r'roi_heads\.box_head\.' + _STAGE + r'conv(\d+)\.norm\.' + _NORM_FIELD, 'bbox_conv_norm'),
    (r'roi_heads\.box_head\.' + _STAGE + r'fc(\d+)\.' + _FIELD, 'bbox_fc'),
    (r'roi_heads\.box_predictor\.' + _STAGE + r'cls_score\.' + _FIELD, 'bbox_cls'),
    (r'roi_heads\.box_predictor\.' + _STAGE + r'bbox_pred\.' + _FIELD, 'bbox_reg'),
    # mask head: mask_fcnK -> convs.K-1, deconv -> upsample, predictor -> conv_logits
    (r'roi_heads\.mask_head\.mask_fcn(\d+)\.' + _FIELD, 'mask_conv'),
    (r'roi_heads\.mask_head\.mask_fcn(\d+)\.norm\.' + _NORM_FIELD, 'mask_conv_norm'),
    (r'roi_heads\.mask_head\.deconv\.' + _FIELD, 'mask_upsample'),
    (r'roi_heads\.mask_head\.predictor\.' + _FIELD, 'mask_logits'),
)
_D2_RULES = tuple((re.compile(p + '$'), r) for p, r in DETECTRON2_RULES)
_SIMFP = re.compile(r'^backbone\.simfp_(\d+)\.(\d+)\.(.+)$')
_NORM_NAMES = ('ln', 'gn', 'bn', 'norm')


def _norm_name(prefix: str, target: Optional[Sequence[str]]) -> str:
    """The norm sub-module name of the mmcv ConvModule at ``prefix`` in the target."""
    for name in _NORM_NAMES:
        if target is None or any(k.startswith(f'{prefix}.{name}.') for k in target):
            return name
    return 'ln'


def _stage_count(target: Optional[Sequence[str]], head: str) -> int:
    """Number of cascade stages of ``roi_head.<head>`` in the target (0 = not staged)."""
    if target is None:
        return 0
    stages = {int(m.group(1)) for k in target
              for m in [re.match(rf'^roi_head\.{head}\.(\d+)\.', k)] if m}
    return len(stages)


def _d2_head_key(kind: str, groups: Tuple[Optional[str], ...],
                 target: Optional[Sequence[str]]) -> List[str]:
    if kind.startswith('bbox_'):
        stage = groups[0]
        base = 'roi_head.bbox_head' + (f'.{stage}' if stage is not None else '')
        if kind == 'bbox_conv':
            return [f'{base}.shared_convs.{int(groups[1]) - 1}.conv.{groups[2]}']
        if kind == 'bbox_conv_norm':
            prefix = f'{base}.shared_convs.{int(groups[1]) - 1}'
            return [f'{prefix}.{_norm_name(prefix, target)}.{groups[2]}']
        if kind == 'bbox_fc':
            return [f'{base}.shared_fcs.{int(groups[1]) - 1}.{groups[2]}']
        return [f'{base}.{"fc_cls" if kind == "bbox_cls" else "fc_reg"}.{groups[1]}']
    # mask head: one in detectron2, one per cascade stage in mmdet
    stages = _stage_count(target, 'mask_head')
    bases = ([f'roi_head.mask_head.{s}' for s in range(stages)] if stages
             else ['roi_head.mask_head'])
    out = []
    for base in bases:
        if kind == 'mask_conv':
            out.append(f'{base}.convs.{int(groups[0]) - 1}.conv.{groups[1]}')
        elif kind == 'mask_conv_norm':
            prefix = f'{base}.convs.{int(groups[0]) - 1}'
            out.append(f'{prefix}.{_norm_name(prefix, target)}.{groups[1]}')
        elif kind == 'mask_upsample':
            out.append(f'{base}.upsample.{groups[0]}')
        else:
            out.append(f'{base}.conv_logits.{groups[0]}')
    return out


def _simfp_key(key: str, levels: Sequence[int], input_stride: int) -> Optional[str]:
    """``backbone.simfp_<L>.<j>.<rest>`` (ViTDet SimpleFeaturePyramid) -> SimpleFPN."""
    m = _SIMFP.match(key)
    if m is None:
        return None
    level, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
    scale = input_stride / 2**level
    resample = {4.0: 4, 2.0: 1, 1.0: 0, 0.5: 1, 0.25: 1}.get(scale)
    if resample is None:
        raise ConversionError(f'{key}: simple feature pyramid level {level} (scale {scale}) '
                              'is not supported by mmssm.SimpleFPN')
    stage = f'neck.stages.{levels.index(level)}'
    if index < resample:
        return f'{stage}.resample.{index}.{rest}'
    part = 'lateral' if index == resample else 'output'
    if index > resample + 1:
        raise ConversionError(f'{key}: unexpected layer {index} in a pyramid stage')
    if rest.startswith('norm.'):
        return f'{stage}.{part}.1.{rest[len("norm."):]}'
    return f'{stage}.{part}.0.{rest}'


def convert_detectron2_heads(state_dict: Mapping[str, Tensor], input_stride: int,
                             target: Optional[Sequence[str]] = None
                             ) -> Tuple['OrderedDict[str, Tensor]', List[Tuple[str, str]],
                                        List[Tuple[str, str]], List[str]]:
    """Neck/head tensors of a detectron2 (ViTDet) checkpoint -> mmdet/mmssm names.

    Returns (converted, renames (old, new), dropped (key, why), unmapped keys).
    """
    levels = sorted({int(m.group(1)) for k in state_dict for m in [_SIMFP.match(k)] if m})
    out, renames, dropped, unmapped = OrderedDict(), [], [], []
    for key, value in state_dict.items():
        if key in ('pixel_mean', 'pixel_std'):
            dropped.append((key, 'input normalisation; the config\'s data_preprocessor '
                            'holds mean/std'))
            continue
        new_keys = None
        if key.startswith('backbone.simfp_'):
            new = _simfp_key(key, levels, input_stride)
            new_keys = [new] if new else None
        else:
            for pattern, repl in _D2_RULES:
                m = pattern.match(key)
                if m is None:
                    continue
                new_keys = ([pattern.sub(repl, key)] if '\\' in repl
                            else _d2_head_key(repl, m.groups(), target))
                break
        if not new_keys:
            unmapped.append(key)
            continue
        for new in new_keys:
            out[new] = value
            renames.append((key, new))
    return out, renames, dropped, unmapped
