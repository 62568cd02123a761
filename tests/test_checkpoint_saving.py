"""A training process killed while it writes a checkpoint can be resumed (issue 11.3).

``tools/train.py`` runs in a child process whose ``torch.save`` is made slow (from its
second save on, the bytes trickle out in small chunks), with ``max_keep_ckpts=1`` as in
the demo configs. The test SIGKILLs it in the middle of writing its second checkpoint,
then checks what a user finds: the first checkpoint intact, ``last_checkpoint`` naming
it, no truncated ``.pth``; ``--resume`` then continues from it to the end.
"""
import os
import os.path as osp
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch

from mmssm.fileio import load_checkpoint_file

pytest.importorskip('mmseg')
pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'fpn_msvmamba_demo.py')

# Runs tools/train.py with a torch.save that announces each save by creating
# <work_dir>/saving_<n> before its first byte and, from the second save on, writes 4 KiB
# every 5 ms.
SLOW_TRAIN = r'''
import io, os, runpy, sys, time
import torch
work_dir, argv = sys.argv[1], sys.argv[2:]
real_save, count = torch.save, [0]

def slow_save(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    count[0] += 1
    open(os.path.join(work_dir, 'saving_%d' % count[0]), 'w').close()
    out = open(f, 'wb') if isinstance(f, (str, os.PathLike)) else f
    data = buffer.getvalue()
    if count[0] < 2:  # the first save at once
        out.write(data)
    else:  # from the second (the one killed) on, 4 KiB every 5 ms
        for start in range(0, len(data), 4096):
            out.write(data[start:start + 4096])
            out.flush()
            time.sleep(0.005)
    if out is not f:
        out.close()

torch.save = slow_save
sys.argv = argv
os.environ.setdefault('OMP_NUM_THREADS', '1')
runpy.run_path(argv[0], run_name='__main__')
'''


def options(iters):
    return ['--cfg-options', f'train_cfg.max_iters={iters}',
            f'train_cfg.val_interval={iters * 10}', 'default_hooks.checkpoint.interval=1',
            'default_hooks.checkpoint.max_keep_ckpts=1', 'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2', f'visualizer.name=vis_{uuid.uuid4().hex[:8]}']


def wait_for(condition, timeout, what, process=None):
    deadline = time.time() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f'training exited ({process.returncode}) before {what}')
        if time.time() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.01)


def test_sigkill_while_saving_then_resume(tmp_path):
    root = tmp_path / 'run'
    make = [sys.executable, osp.join(ROOT, 'tools', 'make_demo_data.py'), '--out',
            str(root / 'data' / 'demo'), '--num-train', '4', '--num-val', '2']
    subprocess.run(make, check=True, capture_output=True)
    work_dir = root / 'work'
    work_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    train = [osp.join(ROOT, 'tools', 'train.py'), CONFIG, '--work-dir', str(work_dir)]
    child = subprocess.Popen([sys.executable, '-c', SLOW_TRAIN, str(work_dir), *train,
                              *options(3)], cwd=root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # iteration 1 saved completely, then iteration 2's save has begun writing
        wait_for(lambda: (work_dir / 'saving_2').exists(), 600, 'the second save', child)
        first = work_dir / 'iter_1.pth'
        wait_for(lambda: any(p.stat().st_size > 64 * 1024 for p in work_dir.iterdir()
                             if p.name.startswith('.iter_2.pth.')),
                 60, 'the second checkpoint to be half written', child)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    # what is left: the complete first checkpoint, named by last_checkpoint
    pth = sorted(p.name for p in work_dir.glob('*.pth'))
    assert pth == ['iter_1.pth'], pth
    assert (work_dir / 'last_checkpoint').read_text() == str(first)
    assert load_checkpoint_file(str(first))['meta']['iter'] == 1
    assert list(work_dir.glob('.iter_2.pth.*.tmp')), 'the kill came after the write'

    # --resume continues from iteration 1 to the end; the stale temporary is gone
    resume = subprocess.run([sys.executable, *train, '--resume', *options(3)], cwd=root,
                            env=env, capture_output=True, text=True)
    assert resume.returncode == 0, resume.stderr[-3000:]
    final = load_checkpoint_file(str(work_dir / 'iter_3.pth'))
    assert final['meta']['iter'] == 3
    steps = {int(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {3}  # one step before the kill, two after the resume
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_3.pth']
    assert not list(work_dir.glob('.*.tmp'))
