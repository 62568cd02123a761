"""mmssm.apis.cpu_heap: glibc's heap policy for CPU runs (what the tools set)."""
import os

import pytest
import torch

from mmssm.apis import cpu_heap


def _on_glibc() -> bool:
    try:
        return bool(os.confstr('CS_GNU_LIBC_VERSION'))
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.parametrize('kwargs', [
    dict(mmap_threshold=0), dict(trim_threshold=-1), dict(mmap_threshold=True),
    dict(trim_threshold=1.5), dict(mmap_threshold=2**31), dict(trim_threshold='1G')])
def test_steady_heap_rejects_bad_thresholds(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f'steady_heap: {name} must be a positive int'):
        cpu_heap.steady_heap(**kwargs)


@pytest.mark.skipif(not _on_glibc(), reason='glibc only')
def test_steady_heap_is_taken_by_glibc():
    assert cpu_heap.steady_heap() is True
    # the defaults again, explicitly: what tools/test.py and tools/train.py set
    assert cpu_heap.steady_heap(cpu_heap.STEADY_MMAP_THRESHOLD,
                                cpu_heap.STEADY_TRIM_THRESHOLD) is True


def test_steady_heap_leaves_other_c_libraries_alone(monkeypatch):
    monkeypatch.setattr(cpu_heap, '_glibc', lambda: None)
    assert cpu_heap.steady_heap() is False
    assert cpu_heap.trim_heap() is False


@pytest.mark.parametrize('switch, cuda, applied', [
    (None, False, True), (None, True, False), ('0', False, False), ('0', True, False),
    ('1', True, True), ('1', False, True), (' 1 ', True, True)])
def test_tools_apply_it_on_cpu_machines_unless_switched_off(monkeypatch, switch, cuda,
                                                            applied):
    calls = []
    monkeypatch.setattr(cpu_heap, 'steady_heap', lambda: calls.append(1) or True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    if switch is None:
        monkeypatch.delenv(cpu_heap.ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(cpu_heap.ENV_SWITCH, switch)
    assert cpu_heap.steady_heap_for_cpu_run() is applied
    assert len(calls) == int(applied)


def test_a_bad_switch_is_named(monkeypatch):
    monkeypatch.setenv(cpu_heap.ENV_SWITCH, 'yes')
    with pytest.raises(ValueError, match="MMSSM_STEADY_HEAP must be 0 .* got 'yes'"):
        cpu_heap.steady_heap_for_cpu_run()


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_train_and_test_tools_set_it_before_anything_else(monkeypatch, tool):
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'tools', f'{tool}.py')
    spec = importlib.util.spec_from_file_location(f'_mmssm_tool_{tool}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    order = []
    monkeypatch.setattr(module, 'steady_heap_for_cpu_run', lambda: order.append('heap'))
    monkeypatch.setattr(module, 'set_launcher_env', stop)
    with pytest.raises(Stop):
        module.main(['missing_config.py'] + (['missing.pth'] if tool == 'test' else []))
    assert order == ['heap']
