"""Every config in configs/ exports and its file runs in ONNX Runtime with the PyTorch
numbers, and an mmpretrain classifier on an mmssm backbone does too.

Cost control: the models keep the configs' widths, heads and every structural option but
one block per stage (Vim: one layer per output) and run at a small input, so one test
checks what a config exports without the full depth's tracing time. The fast tier takes
one config per (task, head) kind, every family among them. The sweep over every config,
each distinct model once (the ``3x_ms`` configs share the ``1x`` models; models
that differ only in widths count as one), is marked slow: ``make test`` runs it,
``make test-fast`` and ``-m 'not slow'`` leave it out.
"""
import functools
import inspect
import json
import os.path as osp
from pathlib import Path

import pytest
import torch

pytest.importorskip('onnxruntime')

from mmssm import families  # noqa: E402
from mmssm.deployment import export_onnx, read_metadata, verify_onnx  # noqa: E402
from mmssm.deployment.tasks import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / 'configs').glob('*.py'))
TOL = 1e-4

# One config per task and head kind (the fast tier).
KINDS = [
    'upernet_msvmamba_n_160k_ade20k',  # UPerHead + FCN auxiliary, whole segmentor
    'fpn_efficientvmamba_t_80k_ade20k',  # Semantic FPN
    'deeplabv3_mobilemamba_b4_80k_ade20k',  # ASPP
    'pspnet_mobilemamba_b4_80k_ade20k',  # pyramid pooling (adaptive pool symbolic)
    'retinanet_vim_ti_1x',  # single stage, Vim + SimpleFPN adapter
    'ssdlite_mobilemamba_b1_320_coco',  # SSDLite head
    'mask_rcnn_vmamba_v0_t_1x',  # two stage: backbone + neck
    'cascade_mask_rcnn_vim_ti_100ep_lsj',  # cascade, Vim (RoPE, residual features)
    'cls_vmamba_t_in1k',  # mmpretrain ImageClassifier: image in, logits out
]


def shallow_backbone(backbone: dict) -> dict:
    """The config's backbone with one block per stage (Vim: one layer per output, the
    outputs renumbered), every other setting kept."""
    backbone = dict(backbone)
    family = families.find(backbone['type'])
    cls = family.backbone_class()
    arch = backbone.get('arch', inspect.signature(cls).parameters['arch'].default)
    arch = dict(cls.arch_settings[arch]) if isinstance(arch, str) else dict(arch)
    if 'depths' in arch:
        arch['depths'] = [1] * len(arch['depths'])
    else:  # Vim: a flat stack of layers, outputs by layer index
        out = backbone.get('out_indices', -1)
        count = len(out) if isinstance(out, (list, tuple)) else 1
        arch['depth'] = count
        backbone['out_indices'] = tuple(range(count))
    backbone['arch'] = arch
    backbone.pop('init_cfg', None)
    backbone['_delete_'] = True
    return backbone


@functools.lru_cache(maxsize=None)
def shallow_config(name: str, folder: str) -> str:
    """A config file inheriting ``configs/<name>.py`` with the shallow backbone."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs' / f'{name}.py'))
    backbone = shallow_backbone(cfg.model.backbone.to_dict())
    path = osp.join(folder, f'{name}_shallow.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = [{str(ROOT / 'configs' / f'{name}.py')!r}]\n"
                f'model = dict(backbone={backbone!r})\n')
    return path


def input_size(cfg) -> tuple:
    """Small, but valid for every head: SSD's extra layers need its 320 input; Vim's
    16-pixel patches with a 4x-down adapter level and FPN levels need 64."""
    if 'ssd' in str(cfg.model.get('bbox_head', {}).get('type', '')).lower():
        return (320, 320)
    return (64, 96)


# Keys that only set the backbone's widths. Two configs whose models differ only in
# these and in the ``in_channels`` that follow from them (necks, heads) trace the same
# graph at other tensor sizes (the kernels and the exporter have no width-dependent
# branch), so the sweep exports the first of them only.
WIDTH_KEYS = ('dims', 'embed_dims')


def _without_in_channels(node):
    if isinstance(node, dict):
        return {k: _without_in_channels(v) for k, v in node.items() if k != 'in_channels'}
    if isinstance(node, (list, tuple)):
        return [_without_in_channels(v) for v in node]
    return node


def model_signature(path: Path) -> str:
    """The model a config builds (schedules and pipelines left out), without the
    backbone's widths (:data:`WIDTH_KEYS`) and every ``in_channels``."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(path))
    model = cfg.model.to_dict()
    backbone = shallow_backbone(model.pop('backbone'))
    for key in WIDTH_KEYS:
        backbone['arch'].pop(key, None)
    model = _without_in_channels(model)
    model['backbone'] = backbone
    return json.dumps(model, sort_keys=True, default=str)


@functools.lru_cache(maxsize=None)
def representatives() -> dict:
    """config name -> the config exported for it: a config of :data:`KINDS` that builds
    the same model, else the first such config by name."""
    first, result = {}, {}
    kinds = [ROOT / 'configs' / f'{name}.py' for name in KINDS]
    for path in kinds + [p for p in CONFIGS if p not in kinds]:
        result[path.stem] = first.setdefault(model_signature(path), path.stem)
    return result


def check_config(name: str, folder) -> None:
    config = shallow_config(name, str(folder))
    model, cfg, _ = build_model(config)
    size = input_size(cfg)
    path = str(folder / f'{name}.onnx')
    info = export_onnx(model, torch.randn(1, 3, *size), path)
    assert read_metadata(path)['part'] == info['part']
    rows = verify_onnx(model, path, [torch.randn(1, 3, *size)])
    bad = [r for r in rows if not r['ok']]
    assert rows and not bad, bad


def test_kinds_cover_every_task_and_head():
    heads = set()
    for name in KINDS:
        assert (ROOT / 'configs' / f'{name}.py').is_file(), name
        heads.add(name.split('_')[0])
    assert heads == {p.stem.split('_')[0] for p in CONFIGS}


@pytest.mark.parametrize('name', KINDS)
def test_config_kind_exports(name, tmp_path):
    check_config(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('name', [p.stem for p in CONFIGS])
def test_every_config_exports(name, tmp_path):
    same = representatives()[name]
    if same in KINDS:
        pytest.skip('checked by test_config_kind_exports' +
                    ('' if same == name else f' ({same}: the same model, at most its widths '
                     'differ)'))
    if same != name:
        pytest.skip(f'builds the model of {same} (at most its widths differ)')
    check_config(name, tmp_path)
