"""Checks of a built model against what its mmssm backbone declares.

An mmssm backbone states the channels and strides of its outputs (``out_channels``,
``out_strides``) before any forward. MobileMamba's maps are at strides 16/32/64, not the
4/8/16/32 of the ResNet / Swin a stock config was written for: plugged into, e.g., the
stock RetinaNet FPN, the model trains, but its anchors (strides 8 ... 128) no longer sit
on the feature maps they describe. :func:`feature_stride_mismatches` finds such
disagreements without running the model: the neck runs on ``meta`` tensors shaped as
declared, and the strides of what it returns are compared with the strides the dense
heads' prior generators (anchors / points) assume.
"""
import copy
from typing import List

import torch
import torch.nn as nn

__all__ = ['feature_stride_mismatches', 'warn_feature_stride_mismatches']

_SIZE = 1024  # probe input side: divisible by every stride in use


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, 'module', model)  # DDP / MMDistributedDataParallel


def feature_stride_mismatches(model: nn.Module) -> List[str]:
    """Descriptions of heads whose prior strides differ from the strides of the
    feature maps they receive (empty: nothing to report, or nothing to check)."""
    model = _unwrap(model)
    backbone = getattr(model, 'backbone', None)
    strides = tuple(getattr(backbone, 'out_strides', ()) or ())
    if not strides or any(s is None for s in strides):
        return []
    channels = backbone.out_channels
    feats = tuple(torch.empty(1, c, _SIZE // s, _SIZE // s, device='meta')
                  for c, s in zip(channels, strides))
    neck = getattr(model, 'neck', None)
    if isinstance(neck, nn.Module):
        probe = copy.deepcopy(neck).to('meta').eval()
        try:
            with torch.no_grad():
                feats = probe(feats)
        except Exception:  # a neck that cannot run on meta tensors: nothing to check
            return []
    if not isinstance(feats, (tuple, list)):
        return []
    levels = [_SIZE / f.shape[-1] for f in feats]
    problems = []
    for name in ('rpn_head', 'bbox_head'):
        head = getattr(model, name, None)
        generator = getattr(head, 'prior_generator', None)
        expected = getattr(generator, 'strides', None)
        if expected is None or type(generator).__name__ == 'SSDAnchorGenerator':
            # SSD places its anchors by its own strides, which need not be the maps'
            # (the official SSDLite configs approximate the last levels on purpose)
            continue
        expected = [s[0] if isinstance(s, (tuple, list)) else s for s in expected]
        got = levels[:len(expected)]
        if [float(s) for s in expected] != got:
            problems.append(
                f'{type(head).__name__} ({name}) assumes feature strides '
                f'{tuple(int(s) for s in expected)}, but it receives maps at strides '
                f'{tuple(int(s) for s in got)} (backbone {type(backbone).__name__} '
                f'out_strides {strides}); adapt the prior generator strides (or the neck)')
    return problems


def warn_feature_stride_mismatches(model: nn.Module) -> List[str]:
    """Log each mismatch of :func:`feature_stride_mismatches` as a warning."""
    problems = feature_stride_mismatches(model)
    if problems:
        from mmengine.logging import print_log
        for problem in problems:
            print_log(f'stride mismatch: {problem}', logger='current', level=30)
    return problems
