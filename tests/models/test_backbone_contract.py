"""One backbone contract for all five families, and the families inside upstream configs.

The contract (``mmssm.models.backbones.base.SSMBackbone``):

* ``forward`` returns a tuple, one map per selected output;
* ``out_channels`` / ``out_strides`` (one entry per output) exist before any forward and
  describe what ``forward`` returns;
* ``frozen_stages=k`` freezes the stem and the first ``k`` stages (mmdet ResNet / Swin
  semantics: -1 nothing, 0 the stem only), frozen modules stay in eval mode;
* ``pretrained`` is accepted as mmseg passes it (None, or a path that becomes a
  ``Pretrained`` init with mmseg's deprecation warning);
* ``init_weights`` re-establishes the SSM initialisation after a parent's ``init_cfg``.

Then every family is built inside stock mmdet / mmseg / mmpretrain configs (the necks'
and heads' ``in_channels`` derived from ``out_channels``) and runs one tiny forward.
"""
import math
import warnings

from mmengine.config import ConfigDict

import pytest
import torch

import mmssm  # noqa: F401  (compat shims before any OpenMMLab import)
from mmssm.registry import MODELS

VIM = dict(embed_dims=16, depth=4)
TINY = {
    'VMamba': dict(type='VMamba', arch=dict(depths=(1, 1, 1, 1), dims=8, d_state=1,
                                           ssm_ratio=1.0, mlp_ratio=2.0, gated=False,
                                           conv_bias=False, patch_embed='v2',
                                           downsample='v3')),
    'MSVMamba': dict(type='MSVMamba', arch=dict(dims=8, depths=(1, 1, 1, 1))),
    'EfficientVMamba': dict(type='EfficientVMamba', arch=dict(dims=8, depths=(1, 1, 1, 1))),
    'MobileMamba': dict(type='MobileMamba', arch=dict(embed_dims=[16, 32, 48],
                                                     depths=[1, 1, 1])),
    'Vim': dict(type='Vim', arch=VIM, img_size=64, with_cls_token=False, with_fpn=True),
}
# Stages as the contract counts them: (stem prefixes, [prefixes of stage 0, 1, ...]).
STAGES = {
    'VMamba': (('patch_embed.', ), [(f'layers.{i}.', f'outnorm{i}.') for i in range(4)]),
    'MSVMamba': (('patch_embed.', ), [(f'layers.{i}.', f'outnorm{i}.') for i in range(4)]),
    'EfficientVMamba': (('patch_embed.', ),
                        [(f'layers.{i}.', f'outnorm{i}.') for i in range(4)]),
    'MobileMamba': (('patch_embed.', ), [(f'blocks{i}.', ) for i in (1, 2, 3)]),
    'Vim': (('patch_embed.', 'pos_embed'),
            [(f'layers.{i}.', ) for i in range(3)] + [('layers.3.', 'norm_f.')]),
}
FOUR_MAPS = {'VMamba': (0, 1, 2, 3), 'MSVMamba': (0, 1, 2, 3),
             'EfficientVMamba': (0, 1, 2, 3), 'MobileMamba': (0, 1, 2, 3),
             'Vim': (0, 1, 2, 3)}


def build(name, **kwargs):
    cfg = dict(TINY[name], **kwargs)
    return MODELS.build(dict(cfg, type='mmssm.' + cfg['type']))


@pytest.mark.parametrize('name', sorted(TINY))
def test_outputs_are_declared_and_a_tuple(name):
    for indices in (FOUR_MAPS[name], FOUR_MAPS[name][-2:], FOUR_MAPS[name][-1:]):
        with torch.device('meta'):  # declared without running anything
            declared = build(name, out_indices=indices)
        assert len(declared.out_channels) == len(declared.out_strides) > 0
        model = build(name, out_indices=indices).eval()
        assert (model.out_channels, model.out_strides) == (declared.out_channels,
                                                           declared.out_strides)
        size = 64
        with torch.no_grad():
            outs = model(torch.randn(1, 3, size, size))
        assert isinstance(outs, tuple)
        assert [(o.shape[1], size / o.shape[-1]) for o in outs] == [
            (c, float(s)) for c, s in zip(model.out_channels, model.out_strides)]


def _frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def _names_with(model, prefixes):
    return {n for n, _ in model.named_parameters() if n.startswith(tuple(prefixes))}


@pytest.mark.parametrize('name', sorted(TINY))
def test_frozen_stages_mean_stem_plus_first_k_stages(name):
    stem, stages = STAGES[name]
    out = FOUR_MAPS[name]
    assert not _frozen_names(build(name, out_indices=out, frozen_stages=-1))
    for k in range(len(stages) + 1):
        model = build(name, out_indices=out, frozen_stages=k)
        expected = _names_with(model, stem)
        for stage in stages[:k]:
            expected |= _names_with(model, stage)
        assert _frozen_names(model) == expected, (name, k)
        model.train()
        for module_name, module in model.named_modules():
            if module_name and (module_name + '.').startswith(
                    tuple(p for s in stages[:k] for p in s)):
                assert not module.training, (name, k, module_name)
    with pytest.raises(ValueError, match='frozen_stages'):
        build(name, out_indices=out, frozen_stages=len(stages) + 1)


@pytest.mark.parametrize('name', sorted(TINY))
def test_pretrained_as_mmseg_passes_it(name):
    assert build(name, pretrained=None).init_cfg is None
    with pytest.warns(UserWarning, match='pretrained is deprecated'):
        model = build(name, pretrained='ckpt.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='ckpt.pth')
    with pytest.raises(ValueError, match='pretrained and init_cfg'):
        build(name, pretrained='ckpt.pth', init_cfg=dict(type='Pretrained', checkpoint='x'))
    with pytest.raises(TypeError, match='pretrained must be a str or None'):
        build(name, pretrained=3)


def _ssm_state(model):
    """(dt biases, A_log rows, D) of every SSM module."""
    dts, a_logs, ds = [], [], []
    for name, p in model.named_parameters():
        if name.endswith(('dt_projs_bias', 'dt_proj.bias', 'dt_proj_b.bias')):
            dts.append(p.detach().flatten())
        elif name.endswith(('A_logs', 'A_log', 'A_b_log')):
            a_logs.append(p.detach())
        elif name.endswith(('.Ds', '.D', '.D_b')):
            ds.append(p.detach().flatten())
    return torch.cat(dts), a_logs, torch.cat(ds)


@pytest.mark.parametrize('name', sorted(TINY))
def test_parent_init_cfg_cannot_destroy_the_ssm_initialisation(name):
    """mmpretrain's Swin recipe: TruncNormal for every Linear (zero bias) and constant
    norms, applied by the parent before the backbone's own init_weights."""
    from mmengine.model import BaseModule

    class Parent(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=[
                dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
                dict(type='Kaiming', layer='Conv2d'),
                dict(type='Constant', layer=['LayerNorm', '_BatchNorm'], val=0.5, bias=0.)])
            self.backbone = build(name)

    torch.manual_seed(0)
    parent = Parent()
    parent.init_weights()
    dts, a_logs, ds = _ssm_state(parent.backbone)
    if name == 'MobileMamba':  # 'v2' init: dt biases U[0, 0.1)
        assert dts.min() >= 0 and dts.max() < 0.1
    else:  # softplus(bias) log-uniform in [1e-3, 1e-1] (floor 1e-4)
        dt = torch.nn.functional.softplus(dts)
        assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    assert dts.std() > 0  # sampled, not a constant from the parent
    assert torch.all(ds == 1)
    for a_log in a_logs:
        if name == 'MobileMamba':  # 'v2' init: A = -1
            assert torch.all(a_log == 0)
        else:
            states = torch.arange(1, a_log.shape[1] + 1, dtype=a_log.dtype).log()
            torch.testing.assert_close(a_log, states.expand_as(a_log))
    if name == 'Vim':  # the numbers: dt weights U(+-R^-1/2), not std 0.02
        weight = parent.backbone.layers[0].mixer.dt_proj.weight
        rank = weight.shape[1]
        assert weight.std() > 0.4 / math.sqrt(rank)
    if name == 'MobileMamba':  # residual-branch BatchNorms start at 0, not at 0.5
        pw2 = [m for n, m in parent.backbone.named_modules() if n.endswith('.pw2')]
        assert pw2 and all(torch.all(m.bn.weight == 0) for m in pw2)


def test_init_weights_keeps_a_pretrained_checkpoint(tmp_path):
    model = build('VMamba')
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / 'mmssm.pth'
    torch.save({'state_dict': reference}, path)
    fresh = build('VMamba', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    fresh.init_weights()
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, reference[key])


# ------------------------------------------------------------------ upstream configs
# Stock configs of the installed libraries; their ResNet is replaced by each family.
UPSTREAM = {
    'faster_rcnn': 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'cascade_mask_rcnn': 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    'retinanet': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    'fcos': 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
    'dino': 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    'deformable_detr': 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
    'mask2former': 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
    'deeplabv3plus': 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py',
    'upernet': 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py',
    'pspnet': 'mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'classifier': 'mmpretrain::resnet/resnet50_8xb32_in1k.py',
}
RESNET_CHANNELS = (256, 512, 1024, 2048)  # ResNet-50 stage widths
CHANNEL_KEYS = ('in_channels', 'c1_in_channels')


def _adapt_channels(part, per_stage, stage_of):
    """Replace ResNet widths in the top-level ``in_channels`` / ``c1_in_channels`` of the
    module that consumes the backbone (neck, or heads without a neck) by ours: a list of
    the selected stages' widths becomes ours; a single width our width of that stage."""
    for key in CHANNEL_KEYS:
        value = part.get(key)
        if isinstance(value, int) and value in stage_of:
            part[key] = per_stage[stage_of[value]]
        elif isinstance(value, (list, tuple)) and all(v in stage_of for v in value):
            part[key] = [per_stage[stage_of[v]] for v in value]


def upstream_config(spec):
    """``'mmdet::x/y.py'`` -> the config file the installed package ships."""
    import importlib.util
    from pathlib import Path

    from mmengine.config import Config
    package, rel = spec.split('::')
    root = Path(importlib.util.find_spec(package).origin).parent
    return Config.fromfile(str(root / '.mim' / 'configs' / rel))


def upstream_model_cfg(task, name):
    cfg = upstream_config(UPSTREAM[task])
    model = cfg.model.to_dict()
    resnet = model['backbone']
    indices = tuple(resnet.get('out_indices', (3, )))
    stages = FOUR_MAPS[name][-4:]
    ours = [stages[i] for i in indices]
    backbone = dict(TINY[name], type='mmssm.' + TINY[name]['type'], out_indices=ours)
    if name == 'Vim' and len(ours) == 1:  # one map: the plain last block
        backbone.update(with_fpn=False, out_indices=(3, ))
    elif name == 'Vim' and len(ours) < 4:  # adapters for the selected levels only
        backbone['out_indices'] = tuple(range(len(ours)))
    with torch.device('meta'):
        declared = MODELS.build(backbone)
    assert len(declared.out_channels) == len(indices)
    per_stage = dict(zip(indices, declared.out_channels))
    stage_of = {RESNET_CHANNELS[i]: i for i in range(4)}
    model['backbone'] = backbone  # 'pretrained' (mmseg bases) stays at the model level
    if model.get('neck') and 'in_channels' in model['neck']:
        consumers = [model['neck']]
    else:
        consumers = [model[k] for k in ('decode_head', 'panoptic_head', 'head', 'bbox_head')
                     if model.get(k)]
        aux = model.get('auxiliary_head') or []
        consumers += aux if isinstance(aux, list) else [aux]
    for part in consumers:
        _adapt_channels(part, per_stage, stage_of)
    return cfg, ConfigDict(model), declared


def _forward(task, scope, model):
    # DETRs select 900 queries among the encoder tokens: they need a larger image
    size = 512 if task in ('dino', 'deformable_detr') else 64
    images = torch.randn(1, 3, size, size)
    meta = dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                batch_input_shape=(size, size), scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=meta)
        return model(images, [sample], mode='tensor')
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return model(images, [SegDataSample(metainfo=meta)], mode='tensor')
    return model(images, mode='tensor')


@pytest.mark.slow
@pytest.mark.parametrize('task', sorted(UPSTREAM))
@pytest.mark.parametrize('name', sorted(TINY))
def test_family_inside_upstream_config(task, name):
    from mmengine.registry import DefaultScope
    cfg, model_cfg, declared = upstream_model_cfg(task, name)
    scope = cfg.default_scope
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with warnings.catch_warnings(), DefaultScope.overwrite_default_scope(scope):
        warnings.simplefilter('ignore')
        model = registry.build(model_cfg).eval()
        backbone = model.backbone
        assert type(backbone).__module__.startswith('mmssm.')
        if 'pretrained' in model_cfg:  # mmseg bases: pretrained -> backbone Pretrained init
            assert backbone.init_cfg == dict(type='Pretrained',
                                             checkpoint=model_cfg['pretrained'])
        with torch.no_grad():
            feats = backbone(torch.randn(1, 3, 64, 64))
            assert isinstance(feats, tuple)
            assert tuple(f.shape[1] for f in feats) == declared.out_channels
            out = _forward(task, scope, model)
    assert all(torch.isfinite(f).all() for f in feats)
    leaves = list(out) if isinstance(out, (tuple, list)) else [out]
    flat = []
    while leaves:
        item = leaves.pop()
        if isinstance(item, (tuple, list)):
            leaves.extend(item)
        elif isinstance(item, torch.Tensor):
            flat.append(item)
    assert flat
    if task not in ('dino', 'deformable_detr'):
        # (random DETR decoders can produce inf/NaN box logits from masked proposals)
        assert all(torch.isfinite(t).all() for t in flat)


def test_stride_mismatch_is_reported():
    """MobileMamba's maps (strides 16/32/64) in the stock RetinaNet (anchors at strides
    8 ... 128) are reported; a 4/8/16/32 family in the same config is not."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import DefaultScope

    from mmssm.apis import feature_stride_mismatches
    found = {}
    for name in ('MobileMamba', 'VMamba'):
        _, model_cfg, _ = upstream_model_cfg('retinanet', name)
        with DefaultScope.overwrite_default_scope('mmdet'):
            model = DET_MODELS.build(model_cfg)
        found[name] = feature_stride_mismatches(model)
    assert found['VMamba'] == []
    assert len(found['MobileMamba']) == 1
    assert 'assumes feature strides (8, 16, 32, 64, 128)' in found['MobileMamba'][0]
    assert 'receives maps at strides (16, 32, 64, 128, 256)' in found['MobileMamba'][0]
