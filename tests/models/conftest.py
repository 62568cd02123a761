"""Helpers shared by the backbone tests.

Test modules in this directory import them directly (``from conftest import
load_fixture``); pytest (default ``prepend`` import mode) puts this directory on ``sys.path``
and makes this file the ``conftest`` module while the directory is collected.

* :func:`shared_dir`                  where ``specs/`` and ``fixtures/`` live
* :func:`keys_tsv`                    path of ``specs/keys/<name>.tsv``
* :func:`parse_keys_tsv`              ``key<TAB>[shape]`` lines -> {key: shape}
* :func:`random_state_dict_from_tsv`  random tensors with exactly those keys/shapes
* :func:`load_fixture`                ``fixtures/<family>/fixture.pt`` (skips if absent)
* :func:`fixture_cases`               (config, state_dict, case) per fixture case
* :func:`output_errors`               max abs / rel error of a list of outputs
"""
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))


def shared_dir() -> Path:
    """``$MMSSM_SHARED_DIR``, else ``<repo>/shared``, else ``/work/shared``."""
    env = os.environ.get('MMSSM_SHARED_DIR')
    if env:
        return Path(env)
    local = REPO_ROOT / 'shared'
    return local if (local / 'specs').is_dir() else Path('/work/shared')


def keys_tsv(name: str) -> Path:
    """Path of ``specs/keys/<name>.tsv`` (``name`` may contain ``extra/``)."""
    return shared_dir() / 'specs' / 'keys' / f'{name}.tsv'


def parse_keys_tsv(path) -> 'OrderedDict[str, Tuple[int, ...]]':
    """Read a keys file: one ``key<TAB>[d0, d1, ...]`` per line, in order."""
    shapes = OrderedDict()
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if not line.strip():
                continue
            try:
                key, shape = line.split('\t')
                shapes[key] = tuple(int(d) for d in json.loads(shape))
            except ValueError as err:
                raise ValueError(f'{path}:{number}: expected "key<TAB>[shape]", got '
                                 f'{line!r}') from err
    return shapes


def random_state_dict_from_tsv(path, seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """A state dict with exactly the keys and shapes of a keys file, random values.

    float32 standard normal, except BatchNorm bookkeeping: ``num_batches_tracked``
    is an int64 count and ``running_var`` is positive.
    """
    generator = torch.Generator().manual_seed(seed)
    state_dict = OrderedDict()
    for key, shape in parse_keys_tsv(path).items():
        if key.endswith('num_batches_tracked'):
            value = torch.randint(0, 1000, shape, generator=generator, dtype=torch.long)
        elif key.endswith('running_var'):
            value = torch.rand(shape, generator=generator) + 0.5
        else:
            value = torch.randn(shape, generator=generator)
        state_dict[key] = value
    return state_dict


def fixture_path(family: str) -> Path:
    return shared_dir() / 'fixtures' / family / 'fixture.pt'


def load_fixture(family: str) -> Dict[str, Any]:
    """Load ``fixtures/<family>/fixture.pt`` (tensors only, ``weights_only=True``);
    skip the calling test if the file is not there."""
    path = fixture_path(family)
    if not path.is_file():
        pytest.skip(f'fixture not found: {path}')
    return torch.load(path, map_location='cpu', weights_only=True)


def fixture_cases(fixture: Dict[str, Any]) -> List[Tuple[dict, dict, dict]]:
    """``(config, state_dict, case)`` per case; a case's own ``config`` /
    ``state_dict`` override the top-level ones."""
    return [(case.get('config', fixture['config']), case.get('state_dict', fixture['state_dict']),
             case) for case in fixture['cases']]


def output_errors(outputs, expected) -> List[Dict[str, float]]:
    """Per output: max absolute error and max relative error ``|d| / max(|ref|)``
    over the whole map (element-wise ratios blow up at zero crossings)."""
    if len(outputs) != len(expected):
        raise AssertionError(f'{len(outputs)} outputs, expected {len(expected)}')
    errors = []
    for out, ref in zip(outputs, expected):
        if tuple(out.shape) != tuple(ref.shape):
            raise AssertionError(f'output shape {tuple(out.shape)}, expected {tuple(ref.shape)}')
        diff = (out.double() - ref.double()).abs()
        errors.append(dict(max_abs=float(diff.max()),
                           max_rel=float(diff.max() / ref.double().abs().max().clamp_min(1e-12))))
    return errors
