"""Every path that loads a checkpoint refuses a file that would run code (issue 11.1).

A payload file -- a real checkpoint of the model plus one pickled call that creates a
marker directory -- is given to each entry point: mmengine's loaders after ``import
mmssm`` (``load_checkpoint``, ``Pretrained`` init of a non-mmssm module, URLs, the
Inferencers), an mmssm backbone's ``init_cfg``, the analysis tools, ``tools/test.py``,
``tools/train.py --resume`` and ``load_from``. Each refuses it with a message naming the
file, the offending global and the opt-in, and the marker never appears; the per-file
opt-in (``--trust-pickle``, ``trust_pickle=True``, :func:`mmssm.fileio.trust_file`) still
loads it. Resuming a full training checkpoint through the safe loader gives the same
run as a full unpickle (what mmengine did before torch 2.6).
"""
import importlib.util
import os
import os.path as osp
import uuid

import pytest
import torch
import torch.nn as nn

import mmssm  # noqa: F401  (installs the compat layer, as any config with mmssm does)
from mmssm import fileio
from mmssm.fileio import UnsafeCheckpointError

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo')
TINY_MSV = dict(arch=dict(dims=16, depths=(1, 1, 1, 1)))


class MakesDirectory:
    """Pickles as ``os.mkdir(path)``: stands for any code a file could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path, )


def save_payload(path, state_dict, marker, meta=None, **extra):
    meta = {**(meta or {}), 'note': MakesDirectory(marker)}
    torch.save({'state_dict': state_dict, 'meta': meta, **extra}, path)
    return str(path)


def assert_refused(info, path, marker):
    text = str(info.value)
    assert str(path) in text, text
    assert 'posix.mkdir' in text, text  # the offending global, by name
    assert '--trust-pickle' in text and 'trust_file' in text, text  # the opt-in
    assert not osp.exists(marker), 'the payload ran'


@pytest.fixture
def untrust():
    """Forget the files a test trusted (trust lasts for the process otherwise)."""
    before = set(fileio._trusted)
    yield
    fileio._trusted.intersection_update(before)


def load_tool(relpath: str):
    path = osp.join(ROOT, relpath)
    spec = importlib.util.spec_from_file_location(
        'mmssm_ckpt_' + osp.basename(relpath)[:-3] + uuid.uuid4().hex[:6], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------- mmengine's loaders
def test_mmengine_load_checkpoint_refuses_payload(tmp_path, untrust):
    from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint
    model, marker = nn.Linear(3, 2), tmp_path / 'ran'
    path = save_payload(tmp_path / 'evil.pth', model.state_dict(), marker)
    for load in (lambda: load_checkpoint(nn.Linear(3, 2), path, map_location='cpu'),
                 lambda: _load_checkpoint(path, map_location='cpu')):
        with pytest.raises(UnsafeCheckpointError) as info:
            load()
        assert_refused(info, path, marker)
    fileio.trust_file(path)  # the opt-in, for this file only
    other = nn.Linear(3, 2)
    load_checkpoint(other, path, map_location='cpu', strict=True)
    assert osp.isdir(marker)
    torch.testing.assert_close(other.weight, model.weight)


def test_mmengine_pretrained_init_refuses_payload(tmp_path):
    """``init_cfg=dict(type='Pretrained')`` of any (non-mmssm) module in a config."""
    from mmengine.model import BaseModule

    class Net(BaseModule):
        def __init__(self, init_cfg):
            super().__init__(init_cfg=init_cfg)
            self.fc = nn.Linear(3, 2)

    marker = tmp_path / 'ran'
    path = save_payload(tmp_path / 'evil.pth', Net(None).state_dict(), marker)
    with pytest.raises(UnsafeCheckpointError) as info:
        Net(dict(type='Pretrained', checkpoint=path)).init_weights()
    assert_refused(info, path, marker)


def test_mmengine_url_loader_refuses_payload(tmp_path, untrust):
    """http(s)://, torchvision://, open-mmlab:// go through mmengine's load_url, which is
    torch.hub's (weights_only=False by default) without the compat layer."""
    from mmengine.runner import checkpoint as mm_checkpoint
    marker = tmp_path / 'ran'
    path = save_payload(tmp_path / 'evil.pth', {'w': torch.ones(2)}, marker)
    url = 'file://' + path
    with pytest.raises(UnsafeCheckpointError) as info:
        mm_checkpoint.load_url(url, model_dir=str(tmp_path / 'hub'))
    assert url in str(info.value)
    assert_refused(info, path, marker)
    fileio.trust_file(url)
    assert mm_checkpoint.load_url(url, model_dir=str(tmp_path / 'hub'))['state_dict']
    assert osp.isdir(marker)


def test_full_training_checkpoint_loads_through_mmengine(tmp_path):
    """What the Runner writes (message hub with HistoryBuffers, numpy, optimizer and
    scheduler state) loads with no opt-in."""
    from mmengine.logging import HistoryBuffer, MessageHub
    from mmengine.runner.checkpoint import _load_checkpoint
    import numpy as np
    hub = MessageHub(f'hub_{uuid.uuid4().hex[:6]}')
    hub.update_scalar('train/loss', 0.5)
    hub.update_info('dataset_meta', dict(classes=('a', 'b'), palette=np.zeros((2, 3))))
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    torch.save({'meta': dict(epoch=1, iter=5, seed=np.int64(3)),
                'state_dict': model.state_dict(), 'message_hub': hub.state_dict(),
                'optimizer': optimizer.state_dict(),
                'param_schedulers': [{'last_step': 5, 'base_values': [1e-3]}]},
               tmp_path / 'iter_5.pth')
    contents = _load_checkpoint(str(tmp_path / 'iter_5.pth'), map_location='cpu')
    assert type(contents['message_hub']['log_scalars']['train/loss']) is HistoryBuffer
    assert contents['optimizer']['state'][0]['step'] == 1


def test_inferencer_refuses_payload(tmp_path):
    pytest.importorskip('mmdet')
    from mmdet.apis import DetInferencer

    from mmssm.apis.analysis import build_task_model
    config = osp.join(DEMO, 'retinanet_msvmamba_demo.py')
    model, _, _ = build_task_model(config)
    marker = tmp_path / 'ran'
    path = save_payload(tmp_path / 'evil.pth', model.state_dict(), marker)
    with pytest.raises(UnsafeCheckpointError) as info:
        DetInferencer(model=config, weights=path, device='cpu')
    assert_refused(info, path, marker)


# ------------------------------------------------------------------------ mmssm paths
def test_backbone_init_cfg_refuses_payload(tmp_path):
    from mmssm.models.backbones.msvmamba import MSVMamba
    marker = tmp_path / 'ran'
    source = MSVMamba(**TINY_MSV)
    path = save_payload(tmp_path / 'evil.pth', source.state_dict(), marker)
    with pytest.raises(UnsafeCheckpointError) as info:
        MSVMamba(**TINY_MSV, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    assert_refused(info, path, marker)
    model = MSVMamba(**TINY_MSV, init_cfg=dict(type='Pretrained', checkpoint=path,
                                              trust_pickle=True))
    model.init_weights()
    assert osp.isdir(marker)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_erf_tool_refuses_payload(tmp_path, untrust):
    from mmssm.models.backbones.msvmamba import MSVMamba
    marker = tmp_path / 'ran'
    path = save_payload(tmp_path / 'evil.pth', MSVMamba(**TINY_MSV).state_dict(), marker)
    erf = load_tool('tools/analysis_tools/erf.py')
    argv = ['--backbone', 'msvmamba', '--arch', str(TINY_MSV['arch']), '--checkpoint', path,
            '--num-images', '1', '--shape', '32', '--out', str(tmp_path / 'erf.png')]
    with pytest.raises(UnsafeCheckpointError) as info:
        erf.main(argv)
    assert_refused(info, path, marker)
    erf.main(argv + ['--trust-pickle'])
    assert osp.isdir(marker) and (tmp_path / 'erf.png').is_file()


def test_benchmark_tool_refuses_payload(tmp_path, untrust):
    from mmssm.apis.analysis import build_task_model
    config = osp.join(DEMO, 'retinanet_msvmamba_demo.py')
    model, _, _ = build_task_model(config)
    marker = tmp_path / 'ran'
    path = save_payload(tmp_path / 'evil.pth', model.state_dict(), marker)
    benchmark = load_tool('tools/analysis_tools/benchmark.py')
    argv = [config, '--checkpoint', path, '--shape', '64', '--num-warmup', '0',
            '--num-iters', '1']
    with pytest.raises(UnsafeCheckpointError) as info:
        benchmark.main(argv)
    assert_refused(info, path, marker)
    benchmark.main(argv + ['--trust-pickle'])
    assert osp.isdir(marker)


def test_trust_flag_without_a_checkpoint_is_an_error():
    from mmssm.apis import trust_checkpoints
    with pytest.raises(ValueError, match='no checkpoint to trust'):
        trust_checkpoints([None, ''])


# -------------------------------------------------------------- tools/train.py, test.py
@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    """A folder with data/demo (4 train / 2 val images) to run the tools in."""
    root = tmp_path_factory.mktemp('ckpt_demo')
    load_tool('tools/make_demo_data.py').main(
        ['--out', str(root / 'data' / 'demo'), '--num-train', '4', '--num-val', '2'])
    return root


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quick_options(iters, interval):
    return ['train_cfg.max_iters=%d' % iters, 'train_cfg.val_interval=%d' % (iters * 10),
            'visualizer.name=vis_%s' % uuid.uuid4().hex[:8],
            'default_hooks.checkpoint.interval=%d' % interval,
            'default_hooks.checkpoint.max_keep_ckpts=-1',
            'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
            'test_dataloader.batch_size=2', 'randomness.seed=0']


def scalars(work_dir):
    import json
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if '"loss"' in line]


@pytest.mark.slow
def test_train_and_test_tools_refuse_payload_and_resume_as_before(demo_dir, tmp_path,
                                                                  monkeypatch, untrust,
                                                                  one_thread):
    monkeypatch.chdir(demo_dir)
    config = osp.join(DEMO, 'fpn_msvmamba_demo.py')
    train, test = load_tool('tools/train.py'), load_tool('tools/test.py')
    first = tmp_path / 'first'
    train.main([config, '--work-dir', str(first), '--cfg-options', *quick_options(4, 2)])
    plain = torch.load(first / 'iter_2.pth', map_location='cpu', weights_only=False)
    marker = tmp_path / 'ran'
    evil = save_payload(tmp_path / 'evil_iter_2.pth', plain['state_dict'], marker,
                        **{k: v for k, v in plain.items() if k not in ('state_dict', )})

    # refused: tools/test.py, --resume, load_from
    for run in (lambda: test.main([config, evil, '--work-dir', str(tmp_path / 'test')]),
                lambda: train.main([config, '--work-dir', str(tmp_path / 'r'), '--resume',
                                    evil, '--cfg-options', *quick_options(4, 2)]),
                lambda: train.main([config, '--work-dir', str(tmp_path / 'l'),
                                    '--cfg-options', f'load_from={evil}',
                                    *quick_options(4, 2)])):
        with pytest.raises(UnsafeCheckpointError) as info:
            run()
        assert_refused(info, evil, marker)

    # resume through the safe loader ...
    safe = tmp_path / 'safe'
    train.main([config, '--work-dir', str(safe), '--resume', str(first / 'iter_2.pth'),
                '--cfg-options', *quick_options(4, 2)])
    # ... and through a full unpickle (the opt-in; what mmengine did before torch 2.6)
    trusted = tmp_path / 'trusted'
    train.main([config, '--work-dir', str(trusted), '--resume', evil, '--trust-pickle',
                '--cfg-options', *quick_options(4, 2)])
    assert osp.isdir(marker)
    a = torch.load(safe / 'iter_4.pth', map_location='cpu', weights_only=False)
    b = torch.load(trusted / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    assert [s['step'] for s in a['optimizer']['state'].values()] == \
        [s['step'] for s in b['optimizer']['state'].values()]
    losses_safe, losses_trusted = scalars(safe), scalars(trusted)
    assert [r['iter'] for r in losses_safe] == [3, 4]
    assert [r['loss'] for r in losses_safe] == [r['loss'] for r in losses_trusted]
    assert a['message_hub']['log_scalars']['train/loss'].data[0].tolist() == \
        b['message_hub']['log_scalars']['train/loss'].data[0].tolist()

    # tools/test.py with the opt-in evaluates the file
    os.rmdir(marker)
    metrics = test.main([config, evil, '--trust-pickle', '--work-dir', str(tmp_path / 't'),
                         '--cfg-options', 'test_dataloader.batch_size=2'])
    assert osp.isdir(marker)
    assert metrics is None or 'mIoU' in metrics


@pytest.mark.slow
def test_test_tool_is_strict_unless_told_otherwise(demo_dir, tmp_path, monkeypatch,
                                                   one_thread):
    """Issue 11.2 through the tools: a checkpoint that leaves the detector's head random,
    or one of another family, stops tools/test.py before evaluating anything."""
    from mmssm.apis.analysis import build_task_model
    from mmssm.loading import IncompatibleCheckpointError
    monkeypatch.chdir(demo_dir)
    config = osp.join(DEMO, 'retinanet_msvmamba_demo.py')
    test = load_tool('tools/test.py')
    state = build_task_model(config)[0].state_dict()
    headless = tmp_path / 'headless.pth'
    torch.save({'state_dict': {k: v for k, v in state.items()
                               if not k.startswith('bbox_head.')}}, headless)
    args = ['--work-dir', str(tmp_path / 'w'), '--cfg-options', 'test_dataloader.batch_size=2',
            f'visualizer.name=vis_{uuid.uuid4().hex[:8]}']
    with pytest.raises(IncompatibleCheckpointError) as info:
        test.main([config, str(headless), *args])
    text = str(info.value)
    assert f"checkpoint '{headless}' does not fit RetinaNet" in text
    assert 'missing (bbox_head.' in text and '--non-strict' in text
    test.main([config, str(headless), '--non-strict', *args])  # evaluates, with a warning

    other = build_task_model(osp.join(DEMO, 'ssdlite_mobilemamba_demo.py'))[0]
    wrong = tmp_path / 'ssdlite.pth'
    torch.save({'state_dict': other.state_dict()}, wrong)
    with pytest.raises(IncompatibleCheckpointError,
                       match="^This looks like a MobileMamba checkpoint; the model's backbone "
                             'is MSVMamba'):
        test.main([config, str(wrong), *args])
