"""How ``make test`` runs this suite: pytest-xdist workers side by side (Makefile's
``TEST_WORKERS``), each with its share of the cores as torch threads (tests/conftest.py)."""
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _conftest():
    spec = importlib.util.spec_from_file_location('_suite_conftest',
                                                  ROOT / 'tests' / 'conftest.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('cpus, workers, expected', [
    (2, None, 2),   # in-process run: every core
    (2, '2', 1),    # the CI machine under make test: one thread per worker
    (16, '4', 2),   # at most 8 cores shared
    (16, None, 8),
    (1, '2', 1),    # never below one
    (None, '3', 1),  # os.cpu_count() unknown
])
def test_torch_threads_are_shared_among_workers(monkeypatch, cpus, workers, expected):
    monkeypatch.setattr(os, 'cpu_count', lambda: cpus)
    if workers is None:
        monkeypatch.delenv('PYTEST_XDIST_WORKER_COUNT', raising=False)
    else:
        monkeypatch.setenv('PYTEST_XDIST_WORKER_COUNT', workers)
    assert _conftest().default_test_threads() == expected


def _make_dry_run(*args):
    if shutil.which('make') is None:
        pytest.skip('no make on this machine')
    out = subprocess.run(['make', '-n', '-C', str(ROOT), *args], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if ' -m pytest tests' in line]


@pytest.mark.parametrize('target', ['test', 'test-fast'])
def test_make_test_runs_workers_and_can_run_in_process(target):
    (line,) = _make_dry_run(target, 'TEST_WORKERS=3', 'PYTEST_ARGS=-x')
    assert ' -n 3 --dist loadscope' in line and line.rstrip().endswith('-x')
    (line,) = _make_dry_run(target, 'TEST_WORKERS=0')
    assert ' -n ' not in line and '--dist' not in line
    (line,) = _make_dry_run(target)  # default: the cores, at most 4
    expected = min(len(os.sched_getaffinity(0)), 4)  # what nproc counts
    assert f' -n {expected} --dist loadscope' in line
