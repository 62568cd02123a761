"""End-to-end runs of tools/train.py and tools/test.py on the embedded demo data.

* One training iteration (+ validation) per task type: Mask R-CNN, RetinaNet, UperNet,
  Semantic FPN (MSVMamba) and SSDLite (MobileMamba), with the configs of configs/demo.
* tools/test.py evaluates a checkpoint written by tools/train.py (and dumps predictions).
* A 2-process CPU run (torchrun, gloo) of tools/train.py keeps both ranks' weights equal
  while training changes them; its checkpoint holds them and loads strictly.
* ``--resume`` after an interrupted run continues from the last checkpoint: the same
  iteration, the checkpoint's optimizer state and message hub, then the remaining
  iterations.

Every test runs in a temporary folder holding a small copy of the demo data (the
configs name ``data/demo/...`` relative to the working directory).
"""
import importlib.util
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import uuid

import pytest
import torch

pytest.importorskip('mmcv.ops')  # the OpenMMLab stack comes with `make test`
pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo')

pytestmark = pytest.mark.slow


def load_tool(relpath: str):
    path = osp.join(ROOT, relpath)
    spec = importlib.util.spec_from_file_location(
        'mmssm_e2e_' + osp.basename(relpath)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: a second thread gains little, and on a shared machine
    OpenMP threads waiting for each other can make a step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    """A folder with data/demo (8 train / 4 val images) to run the tools in."""
    root = tmp_path_factory.mktemp('demo_run')
    make = load_tool('tools/make_demo_data.py')
    make.main(['--out', str(root / 'data' / 'demo'), '--num-train', '8', '--num-val', '4'])
    return root


def quick_options(iters: int, checkpoint_interval: int = None):
    """--cfg-options for a short run. The visualizer gets a fresh name: mmengine keeps
    one instance per name per process, and several runners run in this one."""
    interval = checkpoint_interval or iters
    return ['train_cfg.max_iters=%d' % iters, 'train_cfg.val_interval=%d' % iters,
            'visualizer.name=vis_%s' % uuid.uuid4().hex[:8],
            'default_hooks.checkpoint.interval=%d' % interval,
            'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
            'val_dataloader.batch_size=2', 'test_dataloader.batch_size=2']


def logged_losses(work_dir):
    """Training losses of the newest run in work_dir (vis_data/scalars.json)."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)) and
                  osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        records = [json.loads(line) for line in f]
    return [r for r in records if 'loss' in r], [r for r in records if 'loss' not in r]


# task -> (config, metrics its validation must report, extra --cfg-options). A detector
# after one iteration scores every box below the default threshold (0.05), and COCO
# evaluation of no boxes reports nothing: the detectors keep all boxes (score_thr=0).
CONFIGS = {
    'mask_rcnn': ('mask_rcnn_msvmamba_demo.py', ('coco/bbox_mAP', 'coco/segm_mAP'),
                  ['model.test_cfg.rcnn.score_thr=0.0']),
    'retinanet': ('retinanet_msvmamba_demo.py', ('coco/bbox_mAP', ),
                  ['model.test_cfg.score_thr=0.0']),
    'upernet': ('upernet_msvmamba_demo.py', ('mIoU', ), []),
    'semantic_fpn': ('fpn_msvmamba_demo.py', ('mIoU', ), []),
    'ssdlite': ('ssdlite_mobilemamba_demo.py', ('coco/bbox_mAP', ),
                ['model.test_cfg.score_thr=0.0']),
}


@pytest.mark.parametrize('task', sorted(CONFIGS))
def test_one_training_iteration(task, demo_dir, monkeypatch):
    config, metrics, extra = CONFIGS[task]
    monkeypatch.chdir(demo_dir)
    work_dir = demo_dir / 'work_dirs' / task
    train = load_tool('tools/train.py')
    options = quick_options(1) + extra
    train.main([osp.join(DEMO, config), '--work-dir', str(work_dir), '--cfg-options',
                *options])
    assert (work_dir / 'iter_1.pth').is_file()
    losses, evaluations = logged_losses(work_dir)
    assert len(losses) == 1 and losses[0]['iter'] == 1
    assert all(torch.isfinite(torch.tensor(v)) for k, v in losses[0].items()
               if k.startswith('loss'))
    assert losses[0]['loss'] > 0
    assert evaluations, 'the validation after the iteration did not run'
    for metric in metrics:
        assert metric in evaluations[-1], (metric, sorted(evaluations[-1]))
        assert 0.0 <= evaluations[-1][metric] <= 100.0, (metric, evaluations[-1][metric])


def test_test_tool_evaluates_a_trained_checkpoint(demo_dir, monkeypatch):
    monkeypatch.chdir(demo_dir)
    config = osp.join(DEMO, 'mask_rcnn_msvmamba_demo.py')
    work_dir = demo_dir / 'work_dirs' / 'train_then_test'
    load_tool('tools/train.py').main([config, '--work-dir', str(work_dir), '--cfg-options',
                                      *quick_options(2)])
    checkpoint = work_dir / 'iter_2.pth'
    assert checkpoint.is_file()
    eval_dir = demo_dir / 'work_dirs' / 'eval'
    predictions = eval_dir / 'predictions.pkl'
    load_tool('tools/test.py').main([config, str(checkpoint), '--work-dir', str(eval_dir),
                                     '--out', str(predictions), '--cfg-options',
                                     'test_dataloader.batch_size=2'])
    run = sorted(os.listdir(eval_dir))[0]
    with open(eval_dir / run / f'{run}.json') as f:
        metrics = json.load(f)
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    import pickle
    with open(predictions, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 4  # every val image
    assert all('pred_instances' in r for r in results)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# Imported by the training processes through the config's custom_imports.
RANK_WEIGHTS_HOOK = """
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankParameters(Hook):
    \"\"\"Every rank saves its model parameters before and after training.\"\"\"
    priority = 'VERY_LOW'

    def _save(self, runner, stage):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        params = {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
        torch.save(params, f'{runner.work_dir}/rank{get_rank()}_{stage}.pth')

    def before_train(self, runner):
        self._save(runner, 'before')

    def after_train(self, runner):
        self._save(runner, 'after')
"""


def test_two_process_cpu_training(demo_dir, tmp_path):
    """Two gloo processes train one model: they start from the same weights, stay equal
    after every (all-reduced) step, the steps change the weights, and rank 0's
    checkpoint holds those weights and loads strictly into the config's model."""
    (tmp_path / 'e2e_rank_parameters.py').write_text(RANK_WEIGHTS_HOOK)
    config = tmp_path / 'retinanet_ranks.py'
    config.write_text(f"_base_ = [{osp.join(DEMO, 'retinanet_msvmamba_demo.py')!r}]\n"
                      "custom_imports = dict(imports=['e2e_rank_parameters'], "
                      "allow_failed_imports=False)\n"
                      "custom_hooks = [dict(type='SaveRankParameters')]\n")
    work_dir = demo_dir / 'work_dirs' / 'dist'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore',
               PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path), os.environ.get('PYTHONPATH',
                                                                            '')]))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
           '--master_port', str(_free_port()), osp.join(ROOT, 'tools', 'train.py'),
           str(config), '--launcher', 'pytorch', '--work-dir', str(work_dir),
           '--cfg-options', 'env_cfg.dist_cfg.backend=gloo', *quick_options(2)]
    proc = subprocess.run(cmd, cwd=demo_dir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (proc.stdout + proc.stderr)
    assert 'Distributed training: True' in log
    assert 'Iter(train) [2/2]' in log

    params = {(rank, stage): torch.load(work_dir / f'rank{rank}_{stage}.pth',
                                        weights_only=True)
              for rank in (0, 1) for stage in ('before', 'after')}
    names = list(params[0, 'after'])
    assert names and all(set(p) == set(names) for p in params.values())
    for name in names:
        assert torch.equal(params[0, 'before'][name], params[1, 'before'][name]), name
        assert torch.equal(params[0, 'after'][name], params[1, 'after'][name]), name
    changed = [n for n in names if not torch.equal(params[0, 'before'][n], params[0, 'after'][n])]
    assert any(n.startswith('backbone.') for n in changed)
    assert any(n.startswith('bbox_head.') for n in changed)

    checkpoint = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert checkpoint['meta']['iter'] == 2
    for name in names:
        assert torch.equal(checkpoint['state_dict'][name], params[0, 'after'][name]), name
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    from mmssm.apis import load_config
    init_default_scope('mmdet')
    model = MODELS.build(load_config(osp.join(DEMO, 'retinanet_msvmamba_demo.py')).model)
    load_checkpoint(model, str(work_dir / 'iter_2.pth'), map_location='cpu', strict=True)


# ------------------------------------------------------------------------------- resume
RECORDED = {}


@HOOKS.register_module(force=True)
class _RecordTrainStart(Hook):
    """Test hook: the runner's state when the train loop starts (after any resume)."""
    priority = 'VERY_LOW'

    def before_train(self, runner):
        import copy
        RECORDED['iter'] = runner.iter
        RECORDED['optimizer'] = copy.deepcopy(runner.optim_wrapper.state_dict())
        RECORDED['message_hub'] = copy.deepcopy(runner.message_hub.state_dict())


class SimulatedCrash(RuntimeError):
    pass


@HOOKS.register_module(force=True)
class _InterruptAt(Hook):
    """Test hook: the process 'dies' during iteration ``at`` (1-based)."""
    priority = 'VERY_LOW'

    def __init__(self, at: int):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            raise SimulatedCrash(f'simulated interruption in iteration {self.at}')


def _assert_same(a, b, where=''):
    import numpy as np
    from mmengine.logging import HistoryBuffer
    if isinstance(a, HistoryBuffer):
        assert isinstance(b, HistoryBuffer), where
        for x, y in zip(a.data, b.data):
            assert np.array_equal(x, y), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            _assert_same(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, (where, a, b)


def test_resume_after_interruption(demo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(demo_dir)
    work_dir = tmp_path / 'resume'
    base = osp.join(DEMO, 'fpn_msvmamba_demo.py')
    train = load_tool('tools/train.py')

    def config_with(hooks):
        path = tmp_path / f'cfg_{len(hooks)}_{hooks[0]["type"]}.py'
        path.write_text(f'_base_ = [{base!r}]\ncustom_hooks = {hooks!r}\n')
        return str(path)

    # 1) 4 planned iterations, checkpoints every 2, killed during iteration 3
    interrupted = config_with([dict(type='_InterruptAt', at=3)])
    with pytest.raises(SimulatedCrash, match='simulated interruption'):
        train.main([interrupted, '--work-dir', str(work_dir), '--cfg-options',
                    *quick_options(4, checkpoint_interval=2)])
    assert (work_dir / 'iter_2.pth').is_file() and not (work_dir / 'iter_4.pth').exists()
    saved = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)

    # 2) the same command with --resume continues from iter_2.pth
    RECORDED.clear()
    resumed = config_with([dict(type='_RecordTrainStart')])
    train.main([resumed, '--work-dir', str(work_dir), '--resume', '--cfg-options',
                *quick_options(4, checkpoint_interval=2)])
    assert RECORDED['iter'] == saved['meta']['iter'] == 2
    _assert_same(RECORDED['optimizer'], saved['optimizer'], 'optimizer')
    hub = saved['message_hub']
    # the checkpoint's hub holds the 0-based index of the last finished iteration (1);
    # at the start of the resumed loop the runtime info says iteration 2
    assert hub['runtime_info']['iter'] == 1
    assert RECORDED['message_hub']['runtime_info']['iter'] == 2
    _assert_same(RECORDED['message_hub']['log_scalars'], hub['log_scalars'], 'log_scalars')

    final = torch.load(work_dir / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert final['meta']['iter'] == 4
    steps = {int(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {4}  # 2 steps before the interruption + 2 after the resume
    losses, _ = logged_losses(work_dir)
    assert [r['iter'] for r in losses] == [3, 4]
