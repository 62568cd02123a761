"""Whole official detector / segmentor checkpoints -> mmssm checkpoints for our configs.

An official downstream checkpoint holds a backbone (official names, converted by the
family converter, :func:`mmssm.converters.convert_official`) plus a neck and heads whose
names depend on the framework that trained it. The layouts handled here:

``mmdet3`` / ``mmseg1``
    mmengine checkpoints of mmdet 3.x / mmseg 1.x (VMamba, MSVMamba, EfficientVMamba,
    MobileMamba). Our configs use the same mmdet/mmseg necks and heads (or mmssm's
    ``EfficientViTFPN``, which keeps the official MobileMamba neck names), so every
    neck/head tensor is kept under its name.
``mmdet2`` / ``mmseg0``
    mmcv 1.x checkpoints (Vim segmentation: mmseg 0.29 + mmcv-full 1.7). The parameter
    names of the heads did not change between mmseg 0.x and 1.x (``UPerHead``:
    ``psp_modules.i.1.{conv,bn}``, ``bottleneck``, ``lateral_convs``, ``fpn_convs``,
    ``fpn_bottleneck``, ``conv_seg``; ``FCNHead``: ``convs.i.{conv,bn}``, ``conv_cat``,
    ``conv_seg``; mmseg 1.x loads the 0.x model-zoo files unchanged) — only the container
    differs (``meta`` with ``mmcv_version``/``CLASSES``/``PALETTE``, ``optimizer``). The
    same holds for mmdet 2.x -> 3.x for the two-stage/RetinaNet heads.
``detectron2``
    detectron2 / ViTDet checkpoints (Vim's Cascade Mask R-CNN): the ViTDet trunk
    ``backbone.net.*`` goes through the family converter, the simple feature pyramid
    ``backbone.simfp_<level>.*`` becomes mmssm's ``SimpleFPN`` (``neck.stages.i``), the
    RPN and the (cascade) box/mask heads get mmdet's names (:data:`DETECTRON2_RULES`);
    detectron2's single cascade mask head is copied into each of mmdet's per-stage mask
    heads (identical heads: mmdet's test-time average of their sigmoids is the single
    head's output).

The result must load **strictly** into the model built from the matching config of
``configs/``; anything else (a missing, unexpected or mis-shaped tensor) is refused with
the offending names. Entries of the model that no official checkpoint has and that the
forward never reads are filled from the model and reported (Vim's ``norm_f`` in
detectron2 files, which delete it). Non-tensor entries (optimizer, schedulers, message
hub, meta, pickled configs) are dropped; the output is ``{'state_dict', 'meta'}`` with
tensors and plain strings only.
"""
import argparse
import glob
import os
import os.path as osp
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmssm import families
from mmssm.fileio import TRUST_HELP, load_checkpoint_file, preview

from .base import convert_official, detect_families, get_converter, state_dict_diff
from .checkpoint import extract_state_dict

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]

TASKS = ('det', 'seg')
# Config file name prefixes (``configs/<prefix>_<family>_<variant>...py``) per head kind.
DET_KINDS = ('cascade_mask_rcnn', 'mask_rcnn', 'retinanet', 'ssdlite')
SEG_KINDS = ('upernet', 'fpn', 'deeplabv3', 'pspnet')
LAYOUT_NAMES = {
    'mmdet3': 'mmengine checkpoint of mmdet 3.x',
    'mmseg1': 'mmengine checkpoint of mmseg 1.x',
    'mmdet2': 'mmcv 1.x checkpoint of mmdet 2.x',
    'mmseg0': 'mmcv 1.x checkpoint of mmseg 0.x',
    'detectron2': 'detectron2 (ViTDet) checkpoint',
}
DEFAULT_CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                              'configs')


class ConversionError(RuntimeError):
    """The checkpoint cannot be turned into one that loads strictly into the config."""


@dataclass
class ConversionReport:
    """What happened to every tensor of the official checkpoint."""
    family: str
    task: str
    layout: str
    source_tensors: int = 0
    backbone_in: int = 0
    backbone_out: int = 0
    backbone_renamed: int = 0
    backbone_transformed: int = 0
    backbone_recomputed: int = 0
    backbone_dropped: List[str] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)
    renamed: List[Tuple[str, str]] = field(default_factory=list)
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    filled: List[Tuple[str, str]] = field(default_factory=list)
    entries_dropped: List[str] = field(default_factory=list)
    config: Optional[str] = None
    model: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f'{self.family} {self.task} checkpoint, layout {self.layout} '
                 f'({LAYOUT_NAMES.get(self.layout, self.layout)}): '
                 f'{self.source_tensors} tensors']
        if self.config:
            lines.append(f'  config: {self.config} ({self.model})')
        lines.append(
            f'  backbone: {self.backbone_in} official tensors -> {self.backbone_out} converted '
            f'({self.backbone_renamed} renamed, {self.backbone_transformed} reshaped, '
            f'{self.backbone_recomputed} recomputed), {len(self.backbone_dropped)} '
            + ('dropped or folded into recomputed tensors' if self.backbone_recomputed
               else 'dropped')
            + (f': {preview(self.backbone_dropped, 6)}' if self.backbone_dropped else ''))
        lines.append(f'  neck/heads: {len(self.kept)} kept, {len(self.renamed)} renamed, '
                     f'{len(self.dropped)} dropped')
        for old, new in self.renamed[:6]:
            lines.append(f'    renamed {old} -> {new}')
        if len(self.renamed) > 6:
            lines.append(f'    ... (+{len(self.renamed) - 6} more renames)')
        for key, why in self.dropped:
            lines.append(f'    dropped {key}: {why}')
        for key, why in self.filled:
            lines.append(f'  filled {key}: {why}')
        if self.entries_dropped:
            lines.append('  non-tensor entries dropped: ' + ', '.join(self.entries_dropped))
        for note in self.notes:
            lines.append(f'  note: {note}')
        return '\n'.join(lines)


# --------------------------------------------------------------------------- layouts
def detect_layout(checkpoint: Any, state_dict: Mapping[str, Tensor], task: str) -> str:
    """Which framework wrote the checkpoint (see the module docstring)."""
    if any(k.startswith(('proposal_generator.', 'roi_heads.', 'backbone.net.',
                         'backbone.bottom_up.', 'sem_seg_head.')) for k in state_dict):
        return 'detectron2'
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    mmcv_version = str(meta.get('mmcv_version', '')) if isinstance(meta, Mapping) else ''
    legacy = mmcv_version.startswith('1.')
    if task == 'seg':
        return 'mmseg0' if legacy else 'mmseg1'
    return 'mmdet2' if legacy else 'mmdet3'


def head_kind(state_dict: Mapping[str, Tensor], layout: str) -> Optional[str]:
    """The detector/segmentor type the neck/head tensors belong to (config prefix)."""
    keys = list(state_dict)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if layout == 'detectron2':
        if has('roi_heads.box_predictor.0.') or has('roi_heads.box_head.0.'):
            return 'cascade_mask_rcnn'
        return 'mask_rcnn' if has('roi_heads.mask_head.') else None
    if has('roi_head.bbox_head.0.'):
        return 'cascade_mask_rcnn'
    if has('roi_head.mask_head.'):
        return 'mask_rcnn'
    if has('bbox_head.retina_cls.'):
        return 'retinanet'
    if has('bbox_head.cls_convs.') and has('neck.extra_layers.'):
        return 'ssdlite'
    if has('decode_head.fpn_bottleneck.'):
        return 'upernet'
    if has('decode_head.scale_heads.'):
        return 'fpn'
    if has('decode_head.aspp_modules.'):
        return 'deeplabv3'
    if has('decode_head.psp_modules.'):
        return 'pspnet'
    return None


def _check_task(task: str, state_dict: Mapping[str, Tensor], layout: str) -> None:
    seg_keys = any(k.startswith(('decode_head.', 'auxiliary_head.')) for k in state_dict)
    det_keys = any(k.startswith(('rpn_head.', 'roi_head.', 'bbox_head.', 'roi_heads.',
                                 'proposal_generator.')) for k in state_dict)
    if task == 'det' and seg_keys and not det_keys:
        raise ConversionError('this is a segmentor checkpoint (decode_head.* tensors); '
                              'use --task seg')
    if task == 'seg' and det_keys and not seg_keys:
        raise ConversionError('this is a detector checkpoint (rpn/roi/bbox head tensors); '
                              'use --task det')
    if task == 'seg' and layout == 'detectron2':
        raise ConversionError('detectron2 segmentation checkpoints are not supported (no '
                              'official family released one)')


# --------------------------------------------------------------------------- detectron2
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


# --------------------------------------------------------------------------- conversion
def _split_backbone(state_dict: Mapping[str, Tensor], layout: str
                    ) -> Tuple['OrderedDict[str, Tensor]', 'OrderedDict[str, Tensor]']:
    prefix = 'backbone.net.' if layout == 'detectron2' else 'backbone.'
    backbone, rest = OrderedDict(), OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(prefix):
            backbone[key[len(prefix):]] = value
        else:
            rest[key] = value
    return backbone, rest


def _origin(tensor: Tensor) -> Tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()


def _convert_backbone(family: str, backbone: StateDict, report: ConversionReport
                      ) -> 'OrderedDict[str, Tensor]':
    if not backbone:
        raise ConversionError('the checkpoint has no backbone.* tensors: not a detector or '
                              'segmentor checkpoint')
    found = detect_families(backbone)
    if found and family not in found:
        raise ConversionError(f'the backbone looks like a {found[0]!r} checkpoint, not '
                              f'{family!r}; use --family {found[0]}')
    try:
        converted = convert_official(family, backbone)
    except (KeyError, ValueError, NotImplementedError) as err:
        raise ConversionError(f'{family} backbone conversion failed: {err}') from err
    # Follow each output tensor back to its source by storage (renames keep the tensor,
    # reshapes are views of it); outputs without a source were recomputed.
    source_names = {_origin(v): k for k, v in backbone.items()}
    used = set()
    for key, value in converted.items():
        old = source_names.get(_origin(value))
        if old is None:
            report.backbone_recomputed += 1
            continue
        used.add(old)
        if tuple(value.shape) != tuple(backbone[old].shape):
            report.backbone_transformed += 1
        elif old != key:
            report.backbone_renamed += 1
    report.backbone_in = len(backbone)
    report.backbone_out = len(converted)
    report.backbone_dropped = [k for k in backbone if k not in used]
    return OrderedDict(('backbone.' + k, v) for k, v in converted.items())


def convert_detseg(family: str, task: str, checkpoint: Any,
                   target_keys: Optional[Sequence[str]] = None
                   ) -> Tuple['OrderedDict[str, Tensor]', ConversionReport]:
    """Loaded official checkpoint contents -> (mmssm state dict, report).

    Args:
        family: a family key of :mod:`mmssm.families`.
        task: ``'det'`` or ``'seg'``.
        checkpoint: what :func:`load_checkpoint_file` returned (any wrapping).
        target_keys: state-dict keys of the target model; used by the detectron2
            layout to name norm layers and to copy the mask head into cascade stages.
    """
    if family not in families.names():
        raise ConversionError(f'unknown family {family!r}; expected one of '
                              f'{families.names()}')
    if task not in TASKS:
        raise ConversionError(f'unknown task {task!r}; expected one of {TASKS}')
    try:
        state_dict = extract_state_dict(checkpoint)
    except ValueError as err:
        raise ConversionError(str(err)) from err
    layout = detect_layout(checkpoint, state_dict, task)
    _check_task(task, state_dict, layout)
    report = ConversionReport(family=family, task=task, layout=layout,
                              source_tensors=len(state_dict))
    if isinstance(checkpoint, Mapping):
        inner = next((c for c in ('state_dict', 'model', 'net', 'module')
                      if isinstance(checkpoint.get(c), Mapping)), None)
        report.entries_dropped = [str(k) for k, v in checkpoint.items()
                                  if k != inner and not isinstance(v, Tensor)]
    backbone, rest = _split_backbone(state_dict, layout)
    out = _convert_backbone(family, backbone, report)

    if layout == 'detectron2':
        if family != 'vim':
            raise ConversionError(f'detectron2 checkpoints exist only for Vim; a {family} '
                                  'detectron2 file is not supported')
        proj = backbone.get('patch_embed.proj.weight')
        input_stride = int(proj.shape[-1]) if proj is not None else 16
        heads, renames, dropped, unmapped = convert_detectron2_heads(rest, input_stride,
                                                                     target_keys)
        if unmapped:
            raise ConversionError(
                f'{len(unmapped)} detectron2 tensors have no mmdet counterpart in mmssm\'s '
                f'mapping: {preview(unmapped, 10)}')
        out.update(heads)
        report.renamed, report.dropped = renames, dropped
        report.notes.append(
            'detectron2 and mmdet differ at test time in one place the weights cannot '
            'change: detectron2 averages the cascade stages\' softmax scores, mmdet '
            'averages their logits and applies softmax once; expect small AP differences')
    else:
        for key, value in rest.items():
            out[key] = value
            report.kept.append(key)
    return out, report


# --------------------------------------------------------------------------- model side
def _family_of_backbone_type(type_name: str) -> Optional[str]:
    family = families.find(type_name)
    return family.name if family is not None else None


def load_model_config(path: str):
    """The config at ``path`` (only its ``model`` is used: built in its default scope)."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    return Config.fromfile(path)


def build_from_config(cfg, part: Optional[str] = None) -> nn.Module:
    """Build ``cfg.model`` (or only ``cfg.model[part]``) in the config's scope, without
    loading any pretrained weights."""
    import copy

    from mmengine.registry import MODELS, DefaultScope

    model_cfg = copy.deepcopy(cfg.model)
    if part is not None:
        model_cfg = model_cfg[part]
    scope = cfg.get('default_scope', 'mmdet')
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(model_cfg)


def prepare_backbone(family: str, backbone_model: nn.Module,
                     state_dict: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
    """Apply the family's load-time adaptation (Vim pos_embed/rope resizing, MobileMamba
    BN fusion) to the ``backbone.*`` part, so the saved file matches the model as is."""
    prepare = get_converter(family).prepare_model
    if prepare is None:
        return state_dict
    inner = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                        if k.startswith('backbone.'))
    inner = prepare(backbone_model, inner)
    out = OrderedDict(('backbone.' + k, v) for k, v in inner.items())
    out.update((k, v) for k, v in state_dict.items() if not k.startswith('backbone.'))
    return out


def fill_unused(family: str, model: nn.Module, state_dict: 'OrderedDict[str, Tensor]',
                report: ConversionReport) -> None:
    """Entries the official model deletes but ours keeps, never read by the forward."""
    if family != 'vim':
        return
    backbone = getattr(model, 'backbone', None)
    key = 'backbone.norm_f.weight'
    own = model.state_dict()
    if (key in own and key not in state_dict and backbone is not None
            and getattr(backbone, 'last_feature', 'normed') != 'normed'
            and getattr(backbone, 'out_type', 'featmap') == 'featmap'):
        for name in (key, 'backbone.norm_f.bias'):
            if name in own:
                state_dict[name] = own[name].detach().clone()
                report.filled.append(
                    (name, "the official detection wrapper deletes norm_f; with "
                     f"last_feature='{backbone.last_feature}' the forward never reads it"))


# --------------------------------------------------------------------------- configs
def candidate_configs(family: str, kind: Optional[str], task: str,
                      config_dir: str = DEFAULT_CONFIG_DIR) -> List[str]:
    """Top-level configs named ``<kind>_<family>_...py`` for the task."""
    kinds = [kind] if kind else list(DET_KINDS if task == 'det' else SEG_KINDS)
    found = []
    for path in sorted(glob.glob(osp.join(config_dir, '*.py'))):
        stem = osp.splitext(osp.basename(path))[0]
        for k in kinds:
            # 'mask_rcnn' must not claim 'cascade_mask_rcnn' files
            if stem.startswith(f'{k}_{family}_') and not (
                    k == 'mask_rcnn' and stem.startswith('cascade_')):
                found.append(path)
                break
    return found


# File-name tokens that tell configs of one architecture apart: schedule and input size.
HINT_TOKENS = ('1x', '3x', '320', '512')


def _tokens(text: str) -> set:
    return {t for t in re.split(r'[^a-z0-9]+', text.lower()) if t}


def rank_configs(paths: Sequence[str], source_name: str) -> List[str]:
    """Order candidates: those sharing a schedule / input-size token (``3x``, ``512``)
    with the source file name first, then 1x before longer schedules, then by name."""
    hint = _tokens(osp.basename(source_name)) & set(HINT_TOKENS)

    def key(path):
        stem = osp.splitext(osp.basename(path))[0]
        tokens = _tokens(stem) & set(HINT_TOKENS)
        return (-len(tokens & hint), len(tokens - hint - {'1x'}), stem)

    return sorted(paths, key=key)


def infer_config(family: str, task: str, state_dict: Mapping[str, Tensor],
                 kind: Optional[str], source_name: str,
                 config_dir: str = DEFAULT_CONFIG_DIR, log=print) -> str:
    """The config whose backbone the converted ``backbone.*`` tensors fit exactly."""
    candidates = candidate_configs(family, kind, task, config_dir)
    if not candidates:
        raise ConversionError(
            f'no config in {config_dir} for family {family!r}, task {task!r}'
            + (f' and head type {kind!r}' if kind else '') + '; pass --config')
    backbone_sd = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                              if k.startswith('backbone.'))
    tried, built = [], {}
    for path in rank_configs(candidates, source_name):
        cfg = load_model_config(path)
        if _family_of_backbone_type(cfg.model.backbone.get('type', '')) != family:
            continue
        signature = repr(cfg.model.backbone)  # 1x / 3x configs share the backbone
        if signature not in built:
            built[signature] = build_from_config(cfg, 'backbone')
        backbone = built[signature]
        try:
            adapted = prepare_backbone(family, backbone, OrderedDict(
                ('backbone.' + k, v) for k, v in backbone_sd.items()))
        except (ValueError, KeyError, RuntimeError, NotImplementedError) as err:
            tried.append(f'{osp.basename(path)} ({err})')
            continue
        adapted = OrderedDict((k[len('backbone.'):], v) for k, v in adapted.items())
        missing, unexpected, mismatched = state_dict_diff(backbone, adapted)
        missing = [k for k in missing if not (family == 'vim' and k.startswith('norm_f.'))]
        if not (missing or unexpected or mismatched):
            return path
        tried.append(f'{osp.basename(path)} ({len(missing)} missing, {len(unexpected)} '
                     f'unexpected, {len(mismatched)} mis-shaped)')
    raise ConversionError(
        'no config matches the backbone of this checkpoint: ' + '; '.join(tried) +
        '. Pass --config explicitly to see the exact differences.')


# --------------------------------------------------------------------------- top level
def convert_file(src: str, dst: str, family: str, task: str,
                 config: Optional[str] = None, trust_pickle: bool = False,
                 config_dir: str = DEFAULT_CONFIG_DIR, log=print) -> ConversionReport:
    """Convert ``src`` and write ``dst`` only if it loads strictly into the config's
    model. Raises :class:`ConversionError` (or the loader's errors) otherwise."""
    if osp.abspath(src) == osp.abspath(dst):
        raise ConversionError('output path equals the input path; refusing to overwrite '
                              'the official file')
    contents = load_checkpoint_file(src, trust_pickle=trust_pickle)
    state_dict, report = convert_detseg(family, task, contents)
    kind = head_kind(extract_state_dict(contents), report.layout)
    if config is None:
        config = infer_config(family, task, state_dict, kind, src, config_dir, log)
        log(f'config inferred from the checkpoint: {config} (pass --config to override)')
    elif not osp.isfile(config):
        raise ConversionError(f'--config {config!r} does not exist')
    cfg = load_model_config(config)
    cfg_family = _family_of_backbone_type(cfg.model.backbone.get('type', ''))
    if cfg_family != family:
        raise ConversionError(f'{config} builds a {cfg_family or cfg.model.backbone.get("type")}'
                              f' backbone, not {family}')
    model = build_from_config(cfg)
    target = list(model.state_dict())
    if report.layout == 'detectron2':  # names of norms / cascade stages come from the model
        state_dict, report = convert_detseg(family, task, contents, target)
    try:
        state_dict = prepare_backbone(family, model.backbone, state_dict)
    except (ValueError, KeyError, RuntimeError, NotImplementedError) as err:
        raise ConversionError(f'the backbone tensors do not fit the '
                              f'{type(model.backbone).__name__} of {config}: {err}. '
                              'Wrong --config / variant?') from err
    fill_unused(family, model, state_dict, report)
    report.config = config
    report.model = f'{type(model).__name__} with {type(model.backbone).__name__}'
    missing, unexpected, mismatched = state_dict_diff(model, state_dict)
    if missing or unexpected or mismatched:
        raise ConversionError(
            f'the converted checkpoint would not load strictly into {report.model} built '
            f'from {config}: {len(missing)} missing ({preview(missing, 6)}), '
            f'{len(unexpected)} unexpected ({preview(unexpected, 6)}), {len(mismatched)} '
            f'mis-shaped ({preview(mismatched, 4)}). Wrong --config / variant?\n'
            + report.summary())
    model.load_state_dict(state_dict, strict=True)  # the real thing, hooks included
    out = OrderedDict((k, state_dict[k].detach().clone().contiguous()) for k in target)
    meta = dict(mmssm_family=family, task=task, layout=report.layout,
                config=osp.relpath(config) if not osp.isabs(config) else config,
                source=osp.basename(src), converter='tools/model_converters/official_to_mmssm.py')
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': out, 'meta': meta}, dst)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Convert a whole official detector/segmentor checkpoint (backbone, '
        'neck, heads) into an mmssm checkpoint that loads strictly into the matching '
        'config of configs/, for tools/test.py.')
    parser.add_argument('src', help='official checkpoint file')
    parser.add_argument('dst', help='output file (.pth): {"state_dict", "meta"}, tensors only')
    parser.add_argument('--family', required=True, choices=families.names())
    parser.add_argument('--task', required=True, choices=TASKS,
                        help='det (mmdet 3.x configs) or seg (mmseg 1.x configs)')
    parser.add_argument('--config', default=None,
                        help='target config; default: the config of configs/ for this '
                        'family, task and head type whose backbone fits the checkpoint '
                        '(ties broken by name tokens shared with the input file name, '
                        'e.g. 3x/ms/512)')
    parser.add_argument('--config-dir', default=DEFAULT_CONFIG_DIR,
                        help='where to look for configs when --config is not given')
    parser.add_argument('--trust-pickle', action='store_true', help=TRUST_HELP)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = convert_file(args.src, args.dst, args.family, args.task, args.config,
                              args.trust_pickle, args.config_dir)
    except (ConversionError, FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        print(f'official_to_mmssm: refused: {err}', file=sys.stderr)
        return 1
    print(report.summary())
    print(f'  strict load into {report.model}: OK')
    print(f'  written: {args.dst}')
    print(f'  evaluate: python tools/test.py {report.config} {args.dst}')
    return 0
