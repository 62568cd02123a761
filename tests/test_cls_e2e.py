"""ImageNet classification through mmpretrain, end to end, without torchvision.

* ``tools/make_demo_data.py`` writes an ImageNet-layout set (``train/<class>/``,
  ``meta/train.txt``) that mmpretrain's ``ImageNet`` dataset reads.
* ``tools/train.py configs/demo/cls_msvmamba_demo.py`` trains an MSVMamba classifier for
  a few dozen iterations on it and its top-1 rises well above chance (3 classes); then
  ``tools/test.py`` evaluates the checkpoint it wrote and finds the same top-1.
* ``load_from`` / ``tools/test.py`` take an official classification checkpoint as it is:
  it is converted on the fly (backbone and head) and loads completely.
"""
import importlib.util
import json
import os
import os.path as osp
import uuid
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmpretrain')

import mmssm  # noqa: E402,F401  (compat shims before mmpretrain is imported)

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / 'configs' / 'demo' / 'cls_msvmamba_demo.py'
FIXTURE = ROOT / 'tests' / 'data' / 'fixtures' / 'vmamba' / 'cls_fixture.pt'
CHANCE = 100.0 / 3


def load_tool(relpath: str):
    spec = importlib.util.spec_from_file_location(
        'mmssm_cls_e2e_' + osp.basename(relpath)[:-3], str(ROOT / relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('cls_demo')
    load_tool('tools/make_demo_data.py').main(
        ['--out', str(root / 'data' / 'demo'), '--num-train', '48', '--num-val', '30',
         '--sets', 'imagenet'])
    return root


def test_demo_set_has_the_imagenet_layout(demo_dir):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    root = demo_dir / 'data' / 'demo' / 'imagenet'
    assert sorted(os.listdir(root / 'train')) == ['circle', 'square', 'triangle']
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(dict(type='ImageNet', data_root=str(root), split='val',
                                      metainfo=dict(classes=('circle', 'square', 'triangle')),
                                      pipeline=[]))
    assert len(dataset) == 30
    assert sorted(dataset.get_gt_labels().tolist()) == sorted([0, 1, 2] * 10)


@pytest.mark.slow
def test_train_then_test_a_classifier(demo_dir, monkeypatch):
    monkeypatch.chdir(demo_dir)
    work_dir = demo_dir / 'work_dirs' / 'cls'
    iters = 40
    options = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
               f'default_hooks.checkpoint.interval={iters}',
               f'visualizer.name=vis_{uuid.uuid4().hex[:8]}']
    load_tool('tools/train.py').main([str(DEMO_CONFIG), '--work-dir', str(work_dir),
                                      '--cfg-options', *options])
    run = sorted(d for d in os.listdir(work_dir) if osp.isdir(work_dir / d) and
                 (work_dir / d / 'vis_data' / 'scalars.json').is_file())[-1]
    with open(work_dir / run / 'vis_data' / 'scalars.json') as f:
        records = [json.loads(line) for line in f]
    losses = [r['loss'] for r in records if 'loss' in r]
    top1 = [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]
    assert losses and top1, records
    assert losses[-1] < losses[0]
    assert top1[-1] > CHANCE + 20, f'top-1 {top1[-1]:.1f}% after {iters} iterations'

    metrics = load_tool('tools/test.py').main(
        [str(DEMO_CONFIG), str(work_dir / f'iter_{iters}.pth'), '--work-dir',
         str(demo_dir / 'work_dirs' / 'cls_eval'), '--cfg-options',
         f'visualizer.name=vis_{uuid.uuid4().hex[:8]}'])
    assert metrics['accuracy/top1'] == pytest.approx(top1[-1])


def _fixture_config(tmp_path):
    """A classifier config whose model is the fixture's official VMamba classifier."""
    fixture = torch.load(FIXTURE, map_location='cpu', weights_only=True)
    config = tmp_path / 'cls_vmamba_fixture.py'
    config.write_text(
        f"_base_ = ['{ROOT / 'configs' / 'cls_vmamba_t_in1k.py'}']\n"
        "model = dict(backbone=dict(arch=dict(_delete_=True, depths=(1, 1, 2, 1), dims=16,\n"
        "    d_state=1, ssm_ratio=1.0, mlp_ratio=4.0, gated=False, conv_bias=False,\n"
        "    patch_embed='v2', downsample='v3')), head=dict(num_classes=10,\n"
        "    in_channels=128))\n")
    return str(config), fixture


def test_official_checkpoint_converted_on_the_fly(tmp_path):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from mmssm.apis import convert_official_load_from, load_config
    config, fixture = _fixture_config(tmp_path)
    official = tmp_path / 'official_cls.pth'
    torch.save({'model': fixture['state_dict'], 'epoch': 264}, official)
    cfg = load_config(config)
    converted = convert_official_load_from(cfg, str(official), str(tmp_path / 'work'))
    assert converted == str(tmp_path / 'work' / 'converted' / 'official_cls.pth')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model).eval()
    state_dict = torch.load(converted, map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict(state_dict, strict=True)
    case = fixture['cases'][0]
    with torch.no_grad():
        logits = model(case['input'])
    torch.testing.assert_close(logits, case['outputs'][0], atol=1e-4, rtol=1e-4)
    # an mmssm checkpoint is passed through unchanged; another family's is refused
    assert convert_official_load_from(cfg, converted, str(tmp_path / 'w2')) == converted
    vim = torch.load(FIXTURE.parents[1] / 'vim' / 'cls_fixture.pt', weights_only=True)
    other = tmp_path / 'vim.pth'
    torch.save({'model': vim['state_dict']}, other)
    with pytest.raises(ValueError, match="looks like a 'vim' checkpoint"):
        convert_official_load_from(cfg, str(other), str(tmp_path / 'w3'))


def test_converter_cli_task_cls(tmp_path):
    from mmssm.converters.cli import main
    fixture = torch.load(FIXTURE, map_location='cpu', weights_only=True)
    src = tmp_path / 'official.pth'
    torch.save({'model': fixture['state_dict']}, src)
    dst = main('vmamba', [str(src), str(tmp_path / 'out.pth'), '--task', 'cls'])
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert saved['meta']['mmssm_task'] == 'cls'
    keys = set(saved['state_dict'])
    assert {'backbone.outnorm3.weight', 'head.fc.weight', 'head.fc.bias'} <= keys
    assert len(keys) == len(fixture['state_dict'])
    with pytest.raises(SystemExit):
        main('vmamba', [str(src), str(tmp_path / 'x.pth'), '--task', 'cls', '--prefix', 'b.'])
