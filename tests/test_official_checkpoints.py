"""Official detector / segmentor checkpoints -> our configs (tools/model_converters/
official_to_mmssm.py, mmssm/apis/official_checkpoints.py, mmssm/converters/detseg.py and
detectron2.py).

Each test synthesises a checkpoint in an upstream layout with random tensors:

* backbone keys/shapes from ``specs/keys/<variant>.tsv`` (generated from the official
  downstream classes) under ``backbone.``;
* neck/head keys written here from the upstream naming (mmdet 3.x / mmseg 1.x heads as
  the VMamba-family repos train them, mmseg 0.x heads as Vim's printed UperNet module
  tree shows them, detectron2/ViTDet names for Vim's Cascade Mask R-CNN) -- not read off
  our models, so a naming difference makes the strict load fail;
* the upstream wrapping: ``state_dict`` + ``meta`` + optimizer / message hub (mmengine
  ``HistoryBuffer``, ``ConfigDict``), mmcv 1.x ``meta`` with a pickled config object
  (a throwaway ``mmcv.utils.config.ConfigDict`` class that exists only while pickling),
  detectron2 ``model`` + ``iteration``.

The file is converted, loaded strictly into the model built from our config, and the
slow tests run ``tools/test.py`` on the embedded demo data (``tools/make_demo_data.py``)
end to end -- with random weights the metric is meaningless, the run proves the path.
"""
import contextlib
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import time
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest.importorskip('mmcv.ops')  # mmdet/mmseg models need the compiled mmcv
pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmssm.apis import official_checkpoints  # noqa: E402
from mmssm.converters.detectron2 import convert_detectron2_heads  # noqa: E402
from mmssm.fileio import load_checkpoint_file  # noqa: E402

CONFIGS = REPO / 'configs'
TOOL = REPO / 'tools' / 'model_converters' / 'official_to_mmssm.py'


def load_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location('official_to_mmssm', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


KEYS_DIR = REPO / 'tests' / 'data' / 'keys'  # official key lists (tests/data/README.md)


def keys_from_tsv(name: str) -> 'OrderedDict[str, tuple]':
    path = KEYS_DIR / f'{name}.tsv'
    if not path.is_file():
        raise FileNotFoundError(f'keys file not found: {path}')
    shapes = OrderedDict()
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split('\t')
            shapes[key] = tuple(json.loads(shape))
    return shapes


def random_tensors(shapes, seed: int) -> 'OrderedDict[str, torch.Tensor]':
    """Small random weights (std 0.02) so a random 24-block model stays finite; BN
    statistics as trained BNs have them."""
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            out[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith('running_var'):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.02
    return out


def conv_module(prefix, out_c, in_c, k, norm='bn', bias=None):
    """mmcv ConvModule parameters: ``conv`` (+ ``bn``/``gn``...; bias only without a norm)."""
    shapes = OrderedDict([(f'{prefix}.conv.weight', (out_c, in_c, k, k))])
    if norm is None or bias:
        shapes[f'{prefix}.conv.bias'] = (out_c, )
    if norm == 'bn':
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[f'{prefix}.bn.{name}'] = (out_c, )
        shapes[f'{prefix}.bn.num_batches_tracked'] = ()
    return shapes


def fpn_keys(in_channels, out=256):
    shapes = OrderedDict()
    for i, c in enumerate(in_channels):
        shapes.update(conv_module(f'neck.lateral_convs.{i}', out, c, 1, norm=None))
    for i in range(len(in_channels)):
        shapes.update(conv_module(f'neck.fpn_convs.{i}', out, out, 3, norm=None))
    return shapes


def mask_rcnn_head_keys(num_classes=80):
    """mmdet 3.x ``mask-rcnn_r50_fpn``: RPNHead, Shared2FCBBoxHead, FCNMaskHead."""
    shapes = OrderedDict([
        ('rpn_head.rpn_conv.weight', (256, 256, 3, 3)), ('rpn_head.rpn_conv.bias', (256, )),
        ('rpn_head.rpn_cls.weight', (3, 256, 1, 1)), ('rpn_head.rpn_cls.bias', (3, )),
        ('rpn_head.rpn_reg.weight', (12, 256, 1, 1)), ('rpn_head.rpn_reg.bias', (12, )),
        ('roi_head.bbox_head.fc_cls.weight', (num_classes + 1, 1024)),
        ('roi_head.bbox_head.fc_cls.bias', (num_classes + 1, )),
        ('roi_head.bbox_head.fc_reg.weight', (4 * num_classes, 1024)),
        ('roi_head.bbox_head.fc_reg.bias', (4 * num_classes, )),
        ('roi_head.bbox_head.shared_fcs.0.weight', (1024, 256 * 7 * 7)),
        ('roi_head.bbox_head.shared_fcs.0.bias', (1024, )),
        ('roi_head.bbox_head.shared_fcs.1.weight', (1024, 1024)),
        ('roi_head.bbox_head.shared_fcs.1.bias', (1024, )),
    ])
    for i in range(4):
        shapes.update(conv_module(f'roi_head.mask_head.convs.{i}', 256, 256, 3, norm=None))
    shapes['roi_head.mask_head.upsample.weight'] = (256, 256, 2, 2)
    shapes['roi_head.mask_head.upsample.bias'] = (256, )
    shapes['roi_head.mask_head.conv_logits.weight'] = (num_classes, 256, 1, 1)
    shapes['roi_head.mask_head.conv_logits.bias'] = (num_classes, )
    return shapes


def retinanet_keys(in_channels, num_classes=80):
    """MobileMamba RetinaNet: EfficientViTFPN (1 transposed level, 'on_input' extra) +
    mmdet RetinaHead (4 stacked convs, 9 anchors)."""
    shapes = OrderedDict()
    for i, c in enumerate(in_channels):
        shapes.update(conv_module(f'neck.lateral_convs.{i}', 256, c, 1, norm=None))
    for i in range(len(in_channels)):
        shapes.update(conv_module(f'neck.fpn_convs.{i}', 256, 256, 3, norm=None))
    shapes.update(conv_module(f'neck.fpn_convs.{len(in_channels)}', 256, in_channels[-1], 3,
                              norm=None))
    shapes['neck.extra_trans_convs.0.conv.weight'] = (256, 256, 2, 2)  # ConvTranspose2d
    shapes['neck.extra_trans_convs.0.conv.bias'] = (256, )
    shapes.update(conv_module('neck.extra_fpn_convs.0', 256, 256, 3, norm=None))
    for branch in ('cls_convs', 'reg_convs'):
        for i in range(4):
            shapes.update(conv_module(f'bbox_head.{branch}.{i}', 256, 256, 3, norm=None))
    shapes['bbox_head.retina_cls.weight'] = (9 * num_classes, 256, 3, 3)
    shapes['bbox_head.retina_cls.bias'] = (9 * num_classes, )
    shapes['bbox_head.retina_reg.weight'] = (36, 256, 3, 3)
    shapes['bbox_head.retina_reg.bias'] = (36, )
    return shapes


def upernet_keys(in_channels, channels, aux_in, num_classes=150):
    """mmseg UPerHead + FCNHead(num_convs=1) names -- identical in mmseg 0.x (Vim's
    printed model: seg/tools/analysis_tools/vim-t-upernet.txt) and 1.x."""
    shapes = OrderedDict([('decode_head.conv_seg.weight', (num_classes, channels, 1, 1)),
                          ('decode_head.conv_seg.bias', (num_classes, ))])
    for i in range(4):
        shapes.update(conv_module(f'decode_head.psp_modules.{i}.1', channels,
                                  in_channels[-1], 1))
    shapes.update(conv_module('decode_head.bottleneck', channels,
                              in_channels[-1] + 4 * channels, 3))
    for i, c in enumerate(in_channels[:-1]):
        shapes.update(conv_module(f'decode_head.lateral_convs.{i}', channels, c, 1))
    for i in range(len(in_channels) - 1):
        shapes.update(conv_module(f'decode_head.fpn_convs.{i}', channels, channels, 3))
    shapes.update(conv_module('decode_head.fpn_bottleneck', channels,
                              len(in_channels) * channels, 3))
    shapes['auxiliary_head.conv_seg.weight'] = (num_classes, 256, 1, 1)
    shapes['auxiliary_head.conv_seg.bias'] = (num_classes, )
    shapes.update(conv_module('auxiliary_head.convs.0', 256, aux_in, 3))
    return shapes


def semantic_fpn_keys(in_channels, num_classes=150):
    """mmseg FPN neck (3 outs) + FPNHead, feature strides 16/32/64, channels 128."""
    shapes = fpn_keys(in_channels)
    shapes['decode_head.conv_seg.weight'] = (num_classes, 128, 1, 1)
    shapes['decode_head.conv_seg.bias'] = (num_classes, )
    # scale_heads[i]: log2(stride_i / stride_0) (at least 1) ConvModules, each followed by
    # an Upsample (no parameters) except at the finest level.
    for i, convs in enumerate((1, 1, 2)):
        for j in range(convs):
            shapes.update(conv_module(f'decode_head.scale_heads.{i}.{2 * j}', 128,
                                      256 if j == 0 else 128, 3))
    return shapes


def vitdet_cascade_keys(embed):
    """detectron2 ViTDet: SimpleFeaturePyramid (``backbone.simfp_<L>``, LN), RPN with 2
    convs, 3 cascade 4conv1fc LN box heads (class-agnostic), one LN mask head."""
    s = OrderedDict()

    def conv_ln(prefix, out_c, in_c, k):
        s[f'{prefix}.weight'] = (out_c, in_c, k, k)
        s[f'{prefix}.norm.weight'] = (out_c, )
        s[f'{prefix}.norm.bias'] = (out_c, )

    # scale 4: deconv, LN, GELU, deconv, 1x1, 3x3
    s['backbone.simfp_2.0.weight'] = (embed, embed // 2, 2, 2)
    s['backbone.simfp_2.0.bias'] = (embed // 2, )
    s['backbone.simfp_2.1.weight'] = (embed // 2, )
    s['backbone.simfp_2.1.bias'] = (embed // 2, )
    s['backbone.simfp_2.3.weight'] = (embed // 2, embed // 4, 2, 2)
    s['backbone.simfp_2.3.bias'] = (embed // 4, )
    conv_ln('backbone.simfp_2.4', 256, embed // 4, 1)
    conv_ln('backbone.simfp_2.5', 256, 256, 3)
    s['backbone.simfp_3.0.weight'] = (embed, embed // 2, 2, 2)
    s['backbone.simfp_3.0.bias'] = (embed // 2, )
    conv_ln('backbone.simfp_3.1', 256, embed // 2, 1)
    conv_ln('backbone.simfp_3.2', 256, 256, 3)
    conv_ln('backbone.simfp_4.0', 256, embed, 1)
    conv_ln('backbone.simfp_4.1', 256, 256, 3)
    conv_ln('backbone.simfp_5.1', 256, embed, 1)  # simfp_5.0 is the max-pool
    conv_ln('backbone.simfp_5.2', 256, 256, 3)
    for k in range(2):
        s[f'proposal_generator.rpn_head.conv.conv{k}.weight'] = (256, 256, 3, 3)
        s[f'proposal_generator.rpn_head.conv.conv{k}.bias'] = (256, )
    s['proposal_generator.rpn_head.objectness_logits.weight'] = (3, 256, 1, 1)
    s['proposal_generator.rpn_head.objectness_logits.bias'] = (3, )
    s['proposal_generator.rpn_head.anchor_deltas.weight'] = (12, 256, 1, 1)
    s['proposal_generator.rpn_head.anchor_deltas.bias'] = (12, )
    for stage in range(3):
        for k in range(1, 5):
            conv_ln(f'roi_heads.box_head.{stage}.conv{k}', 256, 256, 3)
        s[f'roi_heads.box_head.{stage}.fc1.weight'] = (1024, 256 * 7 * 7)
        s[f'roi_heads.box_head.{stage}.fc1.bias'] = (1024, )
        s[f'roi_heads.box_predictor.{stage}.cls_score.weight'] = (81, 1024)
        s[f'roi_heads.box_predictor.{stage}.cls_score.bias'] = (81, )
        s[f'roi_heads.box_predictor.{stage}.bbox_pred.weight'] = (4, 1024)
        s[f'roi_heads.box_predictor.{stage}.bbox_pred.bias'] = (4, )
    for k in range(1, 5):
        conv_ln(f'roi_heads.mask_head.mask_fcn{k}', 256, 256, 3)
    s['roi_heads.mask_head.deconv.weight'] = (256, 256, 2, 2)
    s['roi_heads.mask_head.deconv.bias'] = (256, )
    s['roi_heads.mask_head.predictor.weight'] = (80, 256, 1, 1)
    s['roi_heads.mask_head.predictor.bias'] = (80, )
    return s


def vimdet_backbone_keys(variant: str, grid: int = 64):
    """VisionMambaDet state dict per the official wrapper (specs/vim.md §3.2, §4.1): the
    classification keys minus ``head``, ``norm_f`` and ``cls_token``; pos_embed of the
    1024x1024 grid; rope tables (``if_rope``) for that grid."""
    shapes = OrderedDict()
    for key, shape in keys_from_tsv(variant).items():
        if key.startswith(('head.', 'norm_f.')) or key == 'cls_token':
            continue
        if key == 'pos_embed':
            shape = (1, grid * grid, shape[-1])
        shapes[key] = shape
        if key == 'patch_embed.proj.bias':
            shapes['rope.freqs_cos'] = (grid * grid, shape[0])
            shapes['rope.freqs_sin'] = (grid * grid, shape[0])
    return shapes


# --------------------------------------------------------------------------- wrapping
@contextlib.contextmanager
def throwaway_class(module_name: str, class_name: str, base=object):
    """A class importable as ``module_name.class_name`` only inside the block (the
    module and any missing parents are removed from sys.modules afterwards)."""
    added, saved = [], {}
    parts = module_name.split('.')
    for i in range(1, len(parts) + 1):
        name = '.'.join(parts[:i])
        if name in sys.modules and i < len(parts):
            continue
        if name in sys.modules:
            saved[name] = sys.modules[name]
        sys.modules[name] = types.ModuleType(name)
        added.append(name)
    cls = type(class_name, (base, ), {'__module__': module_name})
    setattr(sys.modules[module_name], class_name, cls)
    try:
        yield cls
    finally:
        for name in added:
            del sys.modules[name]
        sys.modules.update(saved)


def mmengine_checkpoint(state_dict, classes):
    """What mmengine's Runner saves (mmdet 3.x / mmseg 1.x training)."""
    from mmengine.config import ConfigDict
    from mmengine.logging import HistoryBuffer
    loss = HistoryBuffer()
    for value in (1.5, 1.2, 0.9):
        loss.update(value)
    return {
        'meta': {'mmengine_version': '0.10.1', 'epoch': 12, 'iter': 87960, 'seed': 0,
                 'experiment_name': 'official', 'time': '20240301_000000',
                 'cfg': "model = dict(type='MaskRCNN')\n",
                 'dataset_meta': {'classes': tuple(classes)},
                 'hook_msgs': ConfigDict(best_score=0.5)},
        'state_dict': state_dict,
        'message_hub': {'log_scalars': {'train/loss': loss},
                        'runtime_info': {'epoch': 12, 'iter': 87960}, 'resumed_keys': {}},
        'optimizer': {'state': {0: {'step': torch.tensor(5.0),
                                    'exp_avg': torch.zeros(3)}},
                      'param_groups': [{'lr': 1e-5, 'params': [0]}]},
        'param_schedulers': [{'base_lrs': [1e-4], 'last_step': 12}],
    }


def save_mmcv1_checkpoint(path, state_dict, classes):
    """What mmcv 1.x's runner saves for mmseg 0.x (Vim): meta with mmcv_version and
    CLASSES/PALETTE -- here also a pickled mmcv 1.x ConfigDict."""
    with throwaway_class('mmcv.utils.config', 'ConfigDict', dict) as config_dict:
        cfg = config_dict(model=dict(type='EncoderDecoder'), crop_size=(512, 512))
        torch.save({'meta': {'mmcv_version': '1.7.1', 'time': 'Fri Mar  1 00:00:00 2024',
                             'CLASSES': tuple(classes),
                             'PALETTE': [[i, i, i] for i in range(len(classes))],
                             'config': cfg},
                    'state_dict': state_dict,
                    'optimizer': {'state': {}, 'param_groups': [{'lr': 0.0}]}}, path)


def save_detectron2_checkpoint(path, state_dict):
    torch.save({'model': state_dict, 'iteration': 184374,
                'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-6}]},
                'scheduler': {'base_lrs': [1e-4], 'last_epoch': 184374}}, path)


COCO80 = tuple(f'class_{i}' for i in range(80))


def official_mask_rcnn_msvmamba_nano(path):
    sd = OrderedDict(('backbone.' + k, v) for k, v in random_tensors(
        keys_from_tsv('msvmamba_nano'), seed=1).items())
    sd.update(random_tensors(fpn_keys([48, 96, 192, 384]), seed=2))
    sd.update(random_tensors(mask_rcnn_head_keys(), seed=3))
    torch.save(mmengine_checkpoint(sd, COCO80), path)
    return sd


def official_retinanet_mobilemamba_b1(path):
    sd = OrderedDict(('backbone.' + k, v) for k, v in random_tensors(
        keys_from_tsv('mobilemamba_b1'), seed=4).items())
    sd.update(random_tensors(retinanet_keys([200, 376, 448]), seed=5))
    torch.save(mmengine_checkpoint(sd, COCO80), path)
    return sd


def official_upernet_msvmamba_nano(path):
    sd = OrderedDict(('backbone.' + k, v) for k, v in random_tensors(
        keys_from_tsv('msvmamba_nano'), seed=6).items())
    sd.update(random_tensors(upernet_keys([48, 96, 192, 384], 512, 192), seed=7))
    torch.save(mmengine_checkpoint(sd, [f'c{i}' for i in range(150)]), path)
    return sd


def official_semantic_fpn_mobilemamba_b4(path):
    sd = OrderedDict(('backbone.' + k, v) for k, v in random_tensors(
        keys_from_tsv('mobilemamba_b4'), seed=8).items())
    sd.update(random_tensors(semantic_fpn_keys([200, 376, 448]), seed=9))
    torch.save(mmengine_checkpoint(sd, [f'c{i}' for i in range(150)]), path)
    return sd


def official_upernet_vim_tiny_mmseg0(path):
    sd = OrderedDict(('backbone.' + k, v) for k, v in random_tensors(
        keys_from_tsv('vim_tiny_seg_upernet'), seed=10).items())
    sd.update(random_tensors(upernet_keys([192] * 4, 192, 192), seed=11))
    save_mmcv1_checkpoint(path, sd, [f'c{i}' for i in range(150)])
    return sd


def official_cascade_vim_tiny_detectron2(path):
    sd = OrderedDict(('backbone.net.' + k, v) for k, v in random_tensors(
        vimdet_backbone_keys('vim_tiny'), seed=12).items())
    sd.update(random_tensors(vitdet_cascade_keys(192), seed=13))
    save_detectron2_checkpoint(path, sd)
    return sd


def convert(src, dst, family, task, config=None, extra=()):
    """Run the converter in-process (argv as on the command line); returns exit code."""
    argv = [str(src), str(dst), '--family', family, '--task', task, *extra]
    if config is not None:
        argv += ['--config', str(config)]
    return tool.main(argv)


def assert_strict(config, converted_path, official_sd, expect_same=()):
    """Build the model of ``config``, load the converted file strictly, and check the
    neck/head tensors (official names in ``expect_same``: (official, ours)) are the
    official ones."""
    cfg = official_checkpoints.load_model_config(str(config))
    model = official_checkpoints.build_from_config(cfg)
    ckpt = torch.load(converted_path, map_location='cpu', weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert all(isinstance(v, torch.Tensor) for v in ckpt['state_dict'].values())
    model.load_state_dict(ckpt['state_dict'], strict=True)
    own = model.state_dict()
    for official, ours in expect_same:
        assert torch.equal(own[ours], official_sd[official]), (official, ours)
    return model, ckpt


# --------------------------------------------------------------------------- fast tests
def test_mask_rcnn_mmdet3_strict_and_trust_pickle(tmp_path, capsys):
    """mmengine Mask R-CNN checkpoint: heads kept by name, strict load. It also holds a
    pickled object outside the allow-list: refused by name without --trust-pickle."""
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    sd = official_mask_rcnn_msvmamba_nano(src)
    config = CONFIGS / 'mask_rcnn_msvmamba_n_1x.py'
    with throwaway_class('thirdparty_hooks.state', 'EvalHookState') as hook_state:
        contents = mmengine_checkpoint(sd, COCO80)
        contents['meta']['hook_state'] = hook_state()
        torch.save(contents, src)
        assert convert(src, dst, 'msvmamba', 'det', config) == 1
        err = capsys.readouterr().err
        assert 'thirdparty_hooks.state.EvalHookState' in err and '--trust-pickle' in err
        assert not dst.exists()
        assert convert(src, dst, 'msvmamba', 'det', config, ['--trust-pickle']) == 0
    out = capsys.readouterr().out
    assert 'layout mmdet3' in out and 'strict load' in out and 'OK' in out
    heads = [k for k in sd if not k.startswith('backbone.')]
    assert f'{len(heads)} kept, 0 renamed, 0 dropped' in out
    assert 'message_hub' in out and 'optimizer' in out  # non-tensor entries reported
    _, ckpt = assert_strict(config, dst, sd, [(k, k) for k in heads])
    assert ckpt['meta']['layout'] == 'mmdet3' and ckpt['meta']['mmssm_family'] == 'msvmamba'
    assert 'hook_state' not in ckpt['meta']


def test_refuses_a_config_of_another_variant(tmp_path, capsys):
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    official_mask_rcnn_msvmamba_nano(src)
    code = convert(src, dst, 'msvmamba', 'det', CONFIGS / 'mask_rcnn_msvmamba_m_1x.py')
    err = capsys.readouterr().err
    assert code == 1 and not dst.exists()
    assert 'would not load strictly' in err and 'mis-shaped' in err


def test_refuses_wrong_family_and_task(tmp_path, capsys):
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    official_mask_rcnn_msvmamba_nano(src)
    assert convert(src, dst, 'vmamba', 'det') == 1
    assert "'msvmamba'" in capsys.readouterr().err
    assert convert(src, dst, 'msvmamba', 'seg') == 1
    assert 'use --task det' in capsys.readouterr().err
    assert not dst.exists()


def test_detectron2_names_map_onto_the_mmdet_cascade():
    """detectron2 -> mmdet renames, without building a model."""
    sd = random_tensors(vitdet_cascade_keys(192), seed=0)
    target = ([f'roi_head.mask_head.{s}.convs.0.ln.weight' for s in range(3)]
              + ['roi_head.bbox_head.0.shared_convs.0.ln.weight'])
    out, renames, dropped, unmapped = convert_detectron2_heads(sd, 16, target)
    assert not unmapped and not dropped
    assert torch.equal(out['neck.stages.0.resample.3.weight'], sd['backbone.simfp_2.3.weight'])
    assert torch.equal(out['neck.stages.0.lateral.1.weight'],
                       sd['backbone.simfp_2.4.norm.weight'])
    assert torch.equal(out['neck.stages.3.output.0.weight'], sd['backbone.simfp_5.2.weight'])
    assert torch.equal(out['rpn_head.rpn_conv.1.conv.bias'],
                       sd['proposal_generator.rpn_head.conv.conv1.bias'])
    assert torch.equal(out['roi_head.bbox_head.2.shared_convs.3.ln.bias'],
                       sd['roi_heads.box_head.2.conv4.norm.bias'])
    assert torch.equal(out['roi_head.bbox_head.1.fc_reg.weight'],
                       sd['roi_heads.box_predictor.1.bbox_pred.weight'])
    for stage in range(3):  # one detectron2 mask head -> three identical mmdet heads
        assert torch.equal(out[f'roi_head.mask_head.{stage}.conv_logits.weight'],
                           sd['roi_heads.mask_head.predictor.weight'])
    assert len(out) == len(sd) + 2 * 16  # 16 mask-head tensors, 2 more copies
    # a name outside the mapping is reported, not guessed
    sd['roi_heads.keypoint_head.conv_fcn1.weight'] = torch.zeros(1)
    assert convert_detectron2_heads(sd, 16, target)[3] == [
        'roi_heads.keypoint_head.conv_fcn1.weight']


def test_load_checkpoint_file_allows_the_upstream_wrappers(tmp_path):
    """mmengine HistoryBuffer/ConfigDict, mmcv 1.x ConfigDict and yacs CfgNode load with
    weights_only=True (no code from the file runs)."""
    path = tmp_path / 'x.pth'
    official_upernet_vim_tiny_mmseg0(path)
    contents = load_checkpoint_file(str(path))
    assert contents['meta']['config']['crop_size'] == (512, 512)
    torch.save(mmengine_checkpoint({'w': torch.ones(1)}, COCO80), path)
    assert load_checkpoint_file(str(path))['message_hub']['log_scalars']
    with throwaway_class('yacs.config', 'CfgNode', dict) as cfg_node:
        torch.save({'model': {'w': torch.ones(1)}, 'config': cfg_node(MODEL=cfg_node())},
                   path)
    assert load_checkpoint_file(str(path))['config']['MODEL'] == {}


class _GetattrOnAllowedClass:
    """Pickles as getattr(OrderedDict, 'fromkeys'): allow-listed class, real attribute."""

    def __reduce__(self):
        return getattr, (OrderedDict, 'fromkeys')


def test_load_checkpoint_file_resolves_getattr_only_on_stand_ins(tmp_path):
    path = tmp_path / 'x.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'x': _GetattrOnAllowedClass()}, path)
    with pytest.raises(RuntimeError, match='getattr'):
        load_checkpoint_file(str(path))


def test_tool_help_explains_trust_pickle():
    text = tool.build_parser().format_help()
    assert '--trust-pickle' in text and 'arbitrary code' in text
    assert '--family' in text and '--task' in text and '--config' in text


@pytest.mark.slow
def test_default_config_is_inferred_from_backbone_shapes(tmp_path, capsys):
    """No --config: family + head type (Mask R-CNN) + backbone shapes pick the nano
    config among the MSVMamba Mask R-CNN configs."""
    src, dst = tmp_path / 'mask_rcnn_ms_vssm_fpn_coco_nano.pth', tmp_path / 'c.pth'
    official_mask_rcnn_msvmamba_nano(src)
    assert convert(src, dst, 'msvmamba', 'det') == 0
    out = capsys.readouterr().out
    assert 'mask_rcnn_msvmamba_n_1x.py' in out


# --------------------------------------------------------------------------- slow tests
@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    """tools/make_demo_data.py output plus a COCO annotation file whose category list is
    extended to the 80 classes the real heads predict (3 demo categories + 77 unused
    ones), so every predicted label has a category id."""
    root = tmp_path_factory.mktemp('demo')
    subprocess.run([sys.executable, str(REPO / 'tools' / 'make_demo_data.py'), '--out',
                    str(root), '--num-train', '1', '--num-val', '2'], check=True, cwd=REPO,
                   timeout=300)
    ann = json.loads((root / 'coco' / 'annotations' / 'instances_val.json').read_text())
    names = [c['name'] for c in ann['categories']]
    for i in range(len(names), 80):
        ann['categories'].append(dict(id=i + 1, name=f'unused_{i + 1}',
                                      supercategory='none'))
        names.append(f'unused_{i + 1}')
    (root / 'coco' / 'annotations' / 'instances_val80.json').write_text(json.dumps(ann))
    return root, names


def det_options(root, names, scale=(160, 128), extra=()):
    coco = root / 'coco'
    return [
        f'test_dataloader.dataset.data_root={coco}/',
        'test_dataloader.dataset.ann_file=annotations/instances_val80.json',
        'test_dataloader.dataset.data_prefix.img=val/',
        f'test_dataloader.dataset.metainfo.classes=[{",".join(names)}]',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        f'test_dataloader.dataset.pipeline.1.scale=({scale[0]},{scale[1]})',
        f'test_evaluator.ann_file={coco}/annotations/instances_val80.json',
        *extra]


def seg_options(root, scale=(160, 128)):
    ade = root / 'ade'
    return [
        'test_dataloader.dataset.type=BaseSegDataset',
        f'test_dataloader.dataset.data_root={ade}/',
        'test_dataloader.dataset.data_prefix.img_path=images/validation',
        'test_dataloader.dataset.data_prefix.seg_map_path=annotations/validation',
        'test_dataloader.dataset.img_suffix=.png',
        'test_dataloader.dataset.seg_map_suffix=.png',
        'test_dataloader.dataset.reduce_zero_label=True',
        'test_dataloader.dataset.metainfo.classes=[background,circle,square,triangle]',
        'test_dataloader.dataset.metainfo.palette=[[0,0,0],[220,60,50],[60,170,70],'
        '[60,90,220]]',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        f'test_dataloader.dataset.pipeline.1.scale=({scale[0]},{scale[1]})']


def run_test_tool(config, checkpoint, options, work_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.time()
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'test.py'), str(config), str(checkpoint),
         '--work-dir', str(work_dir), '--cfg-options', *options],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # mmengine loads non-strictly and only warns: make sure it had nothing to say
    assert 'do not match exactly' not in output, output[-4000:]
    assert 'Load checkpoint from' in output
    print(f'tools/test.py {osp.basename(str(config))}: {time.time() - start:.1f}s')
    return output


def _metric_lines(output, *names):
    lines = [line for line in output.splitlines() if any(n in line for n in names)]
    assert lines, output[-3000:]
    print('\n'.join(lines[-3:]))
    return lines


@pytest.mark.slow
def test_end_to_end_mask_rcnn(tmp_path, demo_data):
    root, names = demo_data
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    official_mask_rcnn_msvmamba_nano(src)
    config = CONFIGS / 'mask_rcnn_msvmamba_n_1x.py'
    assert convert(src, dst, 'msvmamba', 'det', config) == 0
    # random heads score every class ~1/81, below the 0.05 threshold: keep all boxes
    options = det_options(root, names, extra=['model.test_cfg.rcnn.score_thr=0.0'])
    out = run_test_tool(config, dst, options, tmp_path / 'work')
    _metric_lines(out, 'coco/bbox_mAP:', 'coco/segm_mAP:')


@pytest.mark.slow
def test_end_to_end_retinanet(tmp_path, demo_data):
    root, names = demo_data
    src, dst = tmp_path / 'retinanet.pth', tmp_path / 'converted.pth'
    sd = official_retinanet_mobilemamba_b1(src)
    # the command line tool itself, config inferred (RetinaNet + MobileMamba B1)
    result = subprocess.run([sys.executable, str(TOOL), str(src), str(dst), '--family',
                             'mobilemamba', '--task', 'det'], capture_output=True,
                            text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    config = CONFIGS / 'retinanet_mobilemamba_b1_1x.py'
    assert f'config inferred from the checkpoint: {config}' in result.stdout
    heads = [k for k in sd if not k.startswith('backbone.')]
    assert_strict(config, dst, sd, [(k, k) for k in heads])
    out = run_test_tool(config, dst, det_options(root, names), tmp_path / 'work')
    _metric_lines(out, 'coco/bbox_mAP:')


@pytest.mark.slow
def test_end_to_end_upernet_mmseg1(tmp_path, demo_data):
    root, _ = demo_data
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    sd = official_upernet_msvmamba_nano(src)
    config = CONFIGS / 'upernet_msvmamba_n_160k_ade20k.py'
    assert convert(src, dst, 'msvmamba', 'seg', config) == 0
    heads = [k for k in sd if not k.startswith('backbone.')]
    assert_strict(config, dst, sd, [(k, k) for k in heads])
    out = run_test_tool(config, dst, seg_options(root), tmp_path / 'work')
    _metric_lines(out, 'mIoU:')


@pytest.mark.slow
def test_end_to_end_upernet_mmseg0_vim(tmp_path, demo_data, capsys):
    """mmseg 0.x (mmcv 1.x container with a pickled mmcv ConfigDict) -> mmseg 1.x: the
    UPerHead/FCNHead names carry over unchanged; the safe loader accepts the file."""
    root, _ = demo_data
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    sd = official_upernet_vim_tiny_mmseg0(src)
    with pytest.raises(Exception):  # the pickled mmcv 1.x class is not importable here
        torch.load(src, weights_only=False)
    # Vim-S is refused (its 384-channel model does not take the 192-channel tensors) ...
    assert convert(src, dst, 'vim', 'seg', CONFIGS / 'upernet_vim_s_60k_ade20k.py') == 1
    assert 'do not fit' in capsys.readouterr().err and not dst.exists()
    # ... and passed over when the config is inferred
    config = CONFIGS / 'upernet_vim_ti_60k_ade20k.py'
    assert convert(src, dst, 'vim', 'seg') == 0
    out = capsys.readouterr().out
    assert f'config inferred from the checkpoint: {config}' in out
    assert 'layout mmseg0' in out
    heads = [k for k in sd if not k.startswith('backbone.')]
    assert f'{len(heads)} kept, 0 renamed, 0 dropped' in out
    assert_strict(config, dst, sd, [(k, k) for k in heads] + [
        ('backbone.fpn1.1.running_var', 'backbone.fpn1.1.running_var')])
    out = run_test_tool(config, dst, seg_options(root), tmp_path / 'work')
    _metric_lines(out, 'mIoU:')


@pytest.mark.slow
def test_end_to_end_semantic_fpn(tmp_path, demo_data):
    root, _ = demo_data
    src, dst = tmp_path / 'fpn.pth', tmp_path / 'converted.pth'
    sd = official_semantic_fpn_mobilemamba_b4(src)
    config = CONFIGS / 'fpn_mobilemamba_b4_160k_ade20k.py'
    assert convert(src, dst, 'mobilemamba', 'seg', config) == 0
    heads = [k for k in sd if not k.startswith('backbone.')]
    assert_strict(config, dst, sd, [(k, k) for k in heads])
    out = run_test_tool(config, dst, seg_options(root), tmp_path / 'work')
    _metric_lines(out, 'mIoU:')


@pytest.mark.slow
def test_end_to_end_cascade_detectron2_vim(tmp_path, demo_data, capsys):
    root, names = demo_data
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    sd = official_cascade_vim_tiny_detectron2(src)
    config = CONFIGS / 'cascade_mask_rcnn_vim_ti_100ep_lsj.py'
    assert convert(src, dst, 'vim', 'det', config) == 0
    out = capsys.readouterr().out
    assert 'layout detectron2' in out and 'filled backbone.norm_f.weight' in out
    assert_strict(config, dst, sd, [
        ('backbone.net.layers.3.mixer.A_b_log', 'backbone.layers.3.mixer.A_b_log'),
        ('backbone.net.pos_embed', 'backbone.pos_embed'),
        ('backbone.simfp_3.0.weight', 'neck.stages.1.resample.0.weight'),
        ('roi_heads.box_head.1.fc1.weight', 'roi_head.bbox_head.1.shared_fcs.0.weight'),
        ('roi_heads.mask_head.mask_fcn2.norm.weight', 'roi_head.mask_head.2.convs.1.ln.weight'),
    ])
    # 160x120 demo images -> 128x96, padded to exactly that (no square padding: with
    # random weights and no score threshold, boxes lying wholly in padding rows below
    # the image break mmdet's mask pasting)
    options = det_options(root, names, scale=(128, 128), extra=[
        'model.data_preprocessor.batch_augments=None', 'model.test_cfg.rcnn.score_thr=0.0',
        'test_dataloader.dataset.pipeline.2.size=(128,96)'])
    out = run_test_tool(config, dst, options, tmp_path / 'work')
    _metric_lines(out, 'coco/bbox_mAP:', 'coco/segm_mAP:')
