"""Helpers shared by the backbone tests.

Test modules in this directory import them directly (``from conftest import
load_fixture``); pytest (default ``prepend`` import mode) puts this directory on ``sys.path``
and makes this file the ``conftest`` module while the directory is collected.

Every file they read lives in the repository, under ``tests/data`` (see its README for
where each comes from); a missing file is an error, never a skip or an empty list.

* :data:`KEYS_DIR`, :func:`keys_tsv`  official state-dict keys files ``tests/data/keys``
* :func:`keys_files`                  the keys files matching a pattern (never none)
* :func:`parse_keys_tsv`              ``key<TAB>[shape]`` lines -> {key: shape}
* :func:`random_state_dict_from_tsv`  random tensors with exactly those keys/shapes
* :func:`load_fixture`                ``tests/data/fixtures/<family>/fixture.pt``
* :func:`fixture_case_ids`            indices of a fixture's cases (for parametrize)
* :func:`fixture_cases`               (config, state_dict, case) per fixture case
* :func:`output_errors`               max abs / rel error of a list of outputs
* :func:`official_cpu_merge`          MobileMamba with the official CPU merge quirk
* :func:`from_official_reference`     ``from_official`` as the official reference ran
"""
import functools
import json
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))


DATA_DIR = REPO_ROOT / 'tests' / 'data'
KEYS_DIR = DATA_DIR / 'keys'
FIXTURES_DIR = DATA_DIR / 'fixtures'


@pytest.fixture(autouse=True)
def _mmssm_default_scope():
    """Registry look-ups without a scope prefix (``type='VMamba'``) resolve in mmssm's
    registry whatever default scope an earlier test (mmdet/mmseg tools) left behind."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmssm'):
        yield


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f'{what} not found: {path} (tests/data/README.md says where '
                                'the test data comes from)')
    return path


def keys_tsv(name: str) -> Path:
    """Path of ``tests/data/keys/<name>.tsv`` (``name`` may contain ``extra/``)."""
    return _existing(KEYS_DIR / f'{name}.tsv', 'keys file')


def keys_files(pattern: str = '*.tsv', extra: bool = False) -> List[Path]:
    """Sorted keys files matching ``pattern`` (with ``extra``, ``extra/`` too); an error
    when none matches, so no test parametrises over nothing."""
    found = sorted(KEYS_DIR.glob(pattern))
    if extra:
        found += sorted((KEYS_DIR / 'extra').glob(pattern))
    if not found:
        raise FileNotFoundError(f'no keys file matches {pattern!r} in {KEYS_DIR}')
    return found


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


def fixture_path(family: str, kind: str = 'fixture') -> Path:
    """``tests/data/fixtures/<family>/<kind>.pt`` (``kind``: 'fixture' or 'cls_fixture')."""
    return _existing(FIXTURES_DIR / family / f'{kind}.pt', f'{family} {kind}')


def load_fixture(family: str, kind: str = 'fixture') -> Dict[str, Any]:
    """Load a family's reference fixture (tensors only, ``weights_only=True``)."""
    return torch.load(fixture_path(family, kind), map_location='cpu', weights_only=True)


@functools.lru_cache(maxsize=None)
def fixture_case_ids(family: str, kind: str = 'fixture') -> Tuple[int, ...]:
    """``(0, ..., n_cases - 1)`` of a fixture, for ``pytest.mark.parametrize``."""
    cases = load_fixture(family, kind)['cases']
    if not cases:
        raise ValueError(f'{fixture_path(family, kind)} has no cases')
    return tuple(range(len(cases)))


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


def official_cpu_merge(model: torch.nn.Module) -> torch.nn.Module:
    """Make a MobileMamba merge its scan routes like the official pure-PyTorch fallback.

    That fallback (``cross_merge_fwd`` with ``scans=2``), which produced the official
    reference outputs on CPU, broadcasts over the batch by mistake:
    ``y[i] = sum_j fwd[j] + B * bwd[i]`` for a batch of B (the right ``fwd[i] + bwd[i]``
    when B = 1); the official CUDA path merges correctly. Only the parity tests need
    the quirk, so it lives here and not in the model: every ``BidirectionalSS2D`` of
    ``model`` gets an instance-level ``merge_routes`` that mixes CPU batches the same
    way. Returns ``model``.
    """
    from mmssm.models.backbones.mobilemamba import BidirectionalSS2D
    from mmssm.ops.scan_patterns import scan_merge

    def mixing_merge(self, ys, index, size):
        if ys.device.type != 'cpu' or ys.shape[0] == 1:
            return type(self).merge_routes(self, ys, index, size)
        along = scan_merge(ys[:, :1], index[:1], size)  # direction 0, per sample
        reverse = scan_merge(ys[:, 1:], index[1:], size)  # direction 1, re-reversed
        return along.sum(0, keepdim=True) + ys.shape[0] * reverse

    patched = [m for m in model.modules() if isinstance(m, BidirectionalSS2D)]
    if not patched:
        raise TypeError(f'{type(model).__name__} has no BidirectionalSS2D to patch')
    for module in patched:
        module.merge_routes = types.MethodType(mixing_merge, module)
    return model


def from_official_reference(family: str, config, state_dict=None) -> torch.nn.Module:
    """``mmssm.converters.from_official`` configured like the run that produced the
    official reference outputs of the fixtures (MobileMamba: :func:`official_cpu_merge`)."""
    from mmssm.converters import from_official
    model = from_official(family, config, state_dict)
    return official_cpu_merge(model) if family == 'mobilemamba' else model
