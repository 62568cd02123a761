"""Shared pytest setup for the mmssm suite.

* Determinism: every test starts from the same RNG state (torch, numpy, random), so a test
  gives the same numbers alone, in any order, or in the full run.
* Threads: a fixed, modest torch thread count (``MMSSM_TEST_THREADS``, default
  ``min(cpu_count, 8)`` divided among the pytest-xdist workers that ``make test`` runs
  side by side) -- timings stay comparable and oversubscription is avoided.
* Isolation: mmengine's default scope (a process-wide setting that ``init_default_scope``,
  e.g. in ``mmssm.apis.analysis.build_task_model``, leaves behind) is restored after every
  test, so a test building an mmseg model cannot make a later one resolve unscoped names
  in mmseg's registry.
* Markers: ``slow`` (long end-to-end tests; ``make test-fast`` deselects them) and
  ``cuda`` (needs a GPU: skipped with a reason when torch sees none). They are declared
  here only if the project's pytest configuration does not declare them already.
"""
import os
import random

import numpy as np
import pytest
import torch

SEED = 0

_MARKERS = {
    'slow': 'long-running end-to-end test (deselect with -m "not slow")',
    'cuda': 'needs a CUDA device; skipped when torch.cuda.is_available() is False',
}


def _seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_test_threads() -> int:
    """The torch threads of one test process: the machine's cores (at most 8) shared
    by the pytest-xdist workers running side by side (``PYTEST_XDIST_WORKER_COUNT``),
    so that two workers on two cores do not each spin two threads."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1))
    return max(min(os.cpu_count() or 1, 8) // max(workers, 1), 1)


def pytest_configure(config):
    declared = {line.split(':')[0].split('(')[0].strip() for line in config.getini('markers')}
    for name, text in _MARKERS.items():
        if name not in declared:
            config.addinivalue_line('markers', f'{name}: {text}')
    threads = int(os.environ.get('MMSSM_TEST_THREADS', default_test_threads()))
    torch.set_num_threads(max(threads, 1))
    _seed_everything()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs CUDA (torch.cuda.is_available() is False)')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_rng():
    """Re-seed torch/numpy/random before every test."""
    _seed_everything()
    yield


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """Undo any default-scope change a test makes (mmengine keeps it process-wide)."""
    try:
        from mmengine.registry import DefaultScope
    except ImportError:  # the bare op tests need no mmengine
        yield
        return
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)
