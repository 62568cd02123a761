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
    ``backbone.net.*`` goes through the family converter, everything else through
    :mod:`mmssm.converters.detectron2`. Only families whose converter gives a
    ``detectron2_stride`` accept them.

The result is meant to load **strictly** into the model of the matching config
(:mod:`mmssm.apis.official_checkpoints` infers the config, verifies and writes it).
Entries of the model that no official checkpoint has and that the forward never reads
are filled from the model and reported (:func:`fill_unread`, driven by the family
converter's ``unread_entries``). Non-tensor entries (optimizer, schedulers, message hub,
meta, pickled configs) are dropped.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmssm import families
from mmssm.fileio import preview

from .base import ConversionError, convert_official, detect_families, get_converter
from .checkpoint import extract_state_dict
from .detectron2 import convert_detectron2_heads

Tensor = torch.Tensor
StateDict = Dict[str, Tensor]

TASKS = ('det', 'seg')
LAYOUT_NAMES = {
    'mmdet3': 'mmengine checkpoint of mmdet 3.x',
    'mmseg1': 'mmengine checkpoint of mmseg 1.x',
    'mmdet2': 'mmcv 1.x checkpoint of mmdet 2.x',
    'mmseg0': 'mmcv 1.x checkpoint of mmseg 0.x',
    'detectron2': 'detectron2 (ViTDet) checkpoint',
}
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
        stride_of = get_converter(family).detectron2_stride
        if stride_of is None:
            raise ConversionError(f'no official {family} detectron2 checkpoints exist; this '
                                  'detectron2 file is not supported')
        input_stride = stride_of(backbone)
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


def unread_entries(family: str, backbone: nn.Module) -> Dict[str, str]:
    """Entries of ``backbone`` (its own keys) that its forward never reads and official
    checkpoints may lack, with the reason (the family converter's ``unread_entries``)."""
    hook = get_converter(family).unread_entries
    return dict(hook(backbone)) if hook is not None else {}


def fill_unread(family: str, model: nn.Module, state_dict: 'OrderedDict[str, Tensor]',
                report: ConversionReport) -> None:
    """Fill the ``backbone.*`` entries of ``model`` that ``state_dict`` lacks and the
    forward never reads (:func:`unread_entries`) from the model itself, reported."""
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        return
    own = model.state_dict()
    for key, why in unread_entries(family, backbone).items():
        name = 'backbone.' + key
        if name in own and name not in state_dict:
            state_dict[name] = own[name].detach().clone()
            report.filled.append((name, why))
