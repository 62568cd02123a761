"""The EfficientViTFPN neck (``mmssm/models/necks/efficientvit_fpn.py``) on its own.

* Without transposed levels it is mmdet's ``FPN``: the same parameter names (mmcv
  ``ConvModule``: ``conv``/``bn``/``gn``/``activate``) and, with mmdet's weights loaded
  strictly, the same outputs for every extra-level mode, norm and activation.
* The transposed-conv levels against the neck spelled out with functional ops, and the
  output strides of the official MobileMamba Mask R-CNN / RetinaNet necks.
* Bad configurations and inputs are errors that name the problem.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mmssm.models.necks.efficientvit_fpn import EfficientViTFPN
from mmssm.registry import MODELS

CHANNELS = [20, 24, 28]


def backbone_maps(batch=2, channels=CHANNELS, size=(8, 12)):
    """Maps at strides 16/32/64 of a 128x192 image (odd sizes at the coarse end)."""
    return [torch.randn(batch, c, math.ceil(size[0] / 2**i), math.ceil(size[1] / 2**i))
            for i, c in enumerate(channels)]


def _reference_neck(neck, inputs):
    """The neck spelled out with functional ops on its own weights."""
    def conv(module, x, **kw):
        return F.conv2d(x, module.conv.weight, module.conv.bias, **kw)

    lat = [conv(m, x) for m, x in zip(neck.lateral_convs, inputs)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:])
    finer, cur = [], lat[0]
    for m in neck.extra_trans_convs:
        cur = F.conv_transpose2d(cur, m.conv.weight, m.conv.bias, stride=2)
        finer.insert(0, cur)
    outs = [conv(m, x, padding=1) for m, x in zip(neck.fpn_convs, lat)]
    if neck.add_extra_convs == 'on_input':
        outs.append(conv(neck.fpn_convs[len(lat)], inputs[-1], stride=2, padding=1))
    return [conv(m, x, padding=1) for m, x in zip(neck.extra_fpn_convs, finer)] + outs


@pytest.mark.parametrize('mode', ['mask_rcnn', 'retinanet'])
def test_official_det_necks(mode):
    extra = dict(num_extra_trans_convs=2) if mode == 'mask_rcnn' else dict(
        num_extra_trans_convs=1, add_extra_convs='on_input')
    neck = MODELS.build(dict(type='mmssm.EfficientViTFPN', in_channels=CHANNELS,
                             out_channels=16, start_level=0, num_outs=5, **extra))
    neck.init_weights()
    keys = set(neck.state_dict())
    assert {'lateral_convs.0.conv.weight', 'fpn_convs.2.conv.bias',
            'extra_trans_convs.0.conv.weight', 'extra_fpn_convs.0.conv.weight'} <= keys
    assert neck.extra_trans_convs[0].conv.weight.shape == (16, 16, 2, 2)
    inputs = backbone_maps()
    outs = neck(inputs)
    strides = [4, 8, 16, 32, 64] if mode == 'mask_rcnn' else [8, 16, 32, 64, 128]
    assert [tuple(o.shape[2:]) for o in outs] == [
        (math.ceil(128 / s), math.ceil(192 / s)) for s in strides]
    for out, ref in zip(outs, _reference_neck(neck, inputs)):
        torch.testing.assert_close(out, ref)


def test_default_init_is_the_official_one():
    neck = EfficientViTFPN(CHANNELS, 16, num_outs=4, num_extra_trans_convs=1)
    with torch.no_grad():
        for param in neck.parameters():
            param.fill_(7.0)
    neck.init_weights()
    for module in neck.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
            assert float(module.weight.abs().max()) < 7.0
    conv = neck.fpn_convs[0].conv  # Xavier uniform: bound sqrt(6 / (fan_in + fan_out))
    bound = math.sqrt(6 / (16 * 9 + 16 * 9))
    assert float(conv.weight.abs().max()) <= bound


@pytest.mark.parametrize('options', [
    dict(num_outs=3),
    dict(num_outs=5, add_extra_convs=False),
    dict(num_outs=5, add_extra_convs='on_input'),
    dict(num_outs=5, add_extra_convs='on_lateral', relu_before_extra_convs=True),
    dict(num_outs=5, add_extra_convs='on_output'),
    dict(num_outs=2, start_level=1),
    dict(num_outs=4, add_extra_convs=True, norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')),
    dict(num_outs=3, norm_cfg=dict(type='GN', num_groups=4), no_norm_on_lateral=True),
    dict(num_outs=3, upsample_cfg=dict(mode='bilinear', align_corners=False)),
], ids=str)
def test_without_transposed_levels_it_is_mmdet_fpn(options):
    pytest.importorskip('mmdet')
    from mmdet.models.necks import FPN
    reference = FPN(CHANNELS, 16, **options).eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_(0, 0.3)
        for buffer_name, buffer in reference.named_buffers():
            if buffer_name.endswith('running_var'):
                buffer.uniform_(0.5, 1.5)
            elif buffer_name.endswith('running_mean'):
                buffer.normal_(0, 0.2)
    neck = EfficientViTFPN(CHANNELS, 16, **options).eval()
    assert list(neck.state_dict()) == list(reference.state_dict())
    neck.load_state_dict(reference.state_dict(), strict=True)
    inputs = backbone_maps(size=(9, 13))
    with torch.no_grad():
        outs, expected = neck(inputs), reference(inputs)
    assert len(outs) == len(expected) == options['num_outs']
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_bad_configurations_name_the_problem():
    with pytest.raises(ValueError, match='num_outs'):
        EfficientViTFPN(CHANNELS, 16, num_outs=4, num_extra_trans_convs=2)
    with pytest.raises(ValueError, match='no coarse extras with an explicit end_level'):
        EfficientViTFPN(CHANNELS, 16, num_outs=3, end_level=2)
    with pytest.raises(ValueError, match='start_level 3 out of range'):
        EfficientViTFPN(CHANNELS, 16, num_outs=3, start_level=3)
    with pytest.raises(ValueError, match='end_level 5'):
        EfficientViTFPN(CHANNELS, 16, num_outs=3, end_level=5)
    with pytest.raises(ValueError, match='add_extra_convs'):
        EfficientViTFPN(CHANNELS, 16, num_outs=4, add_extra_convs='on_top')
    with pytest.raises(ValueError, match='num_extra_trans_convs must be >= 0'):
        EfficientViTFPN(CHANNELS, 16, num_outs=3, num_extra_trans_convs=-1)
    with pytest.raises(ValueError, match='non-empty list'):
        EfficientViTFPN([], 16, num_outs=1)
    with pytest.raises(NotImplementedError, match='conv_cfg'):
        EfficientViTFPN(CHANNELS, 16, num_outs=3, conv_cfg=dict(type='DCNv2'))
    with pytest.raises(ValueError, match="norm_cfg type 'LN'"):
        EfficientViTFPN(CHANNELS, 16, num_outs=3, norm_cfg=dict(type='LN'))
    with pytest.raises(ValueError, match="act_cfg type 'Mish'"):
        EfficientViTFPN(CHANNELS, 16, num_outs=3, act_cfg=dict(type='Mish'))


def test_bad_inputs_name_the_problem():
    neck = EfficientViTFPN(CHANNELS, 16, num_outs=5, num_extra_trans_convs=2)
    inputs = backbone_maps()
    with pytest.raises(ValueError, match='expects 3 input maps'):
        neck(inputs[:2])
    with pytest.raises(ValueError, match=r'input 1 must be \(B, 24, H, W\)'):
        neck([inputs[0], inputs[0], inputs[2]])
    with pytest.raises(ValueError, match=r'input 0 must be \(B, 20, H, W\), got \(20, 8, 12\)'):
        neck([inputs[0][0], inputs[1], inputs[2]])
