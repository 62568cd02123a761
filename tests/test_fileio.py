"""mmssm.fileio: safe checkpoint loading, the per-file opt-in, unreadable files."""
import io
import os

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mmssm import fileio
from mmssm.fileio import (CorruptCheckpointError, UnsafeCheckpointError,
                          load_checkpoint_file, trust_file)


class RunsCode:
    """Pickles as a call of ``os.getpid`` -- a stand-in for ``os.system``: any code."""

    def __reduce__(self):
        return os.getpid, ()


class _GetattrOnHistoryBuffer:
    """Pickles as getattr(HistoryBuffer, 'update'): a real method, not a statistic."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, 'update')


def _payload(path):
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'x': RunsCode()}}, path)
    return str(path)


def test_payload_is_refused_naming_file_global_and_opt_in(tmp_path):
    path = _payload(tmp_path / 'evil.pth')
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_file(path)
    text = str(info.value)
    assert path in text and 'posix.getpid' in text
    assert '--trust-pickle' in text and 'weights_only=False' in text


def test_trust_pickle_and_trust_file_opt_in_per_file(tmp_path):
    path = _payload(tmp_path / 'evil.pth')
    other = _payload(tmp_path / 'other.pth')
    assert load_checkpoint_file(path, trust_pickle=True)['meta']['x'] == os.getpid()
    trust_file(path)
    try:
        assert load_checkpoint_file(path)['meta']['x'] == os.getpid()
        with pytest.raises(UnsafeCheckpointError):  # trust is per file
            load_checkpoint_file(other)
    finally:
        fileio._trusted.discard(fileio._key(path))


def test_zero_byte_file_is_named_empty(tmp_path):
    path = tmp_path / 'empty.pth'
    path.write_bytes(b'')
    with pytest.raises(CorruptCheckpointError, match=r'empty \(0 bytes\)'):
        load_checkpoint_file(str(path))


@pytest.mark.parametrize('zipfile', [True, False])
def test_truncated_file_is_called_corrupt_not_untrusted(tmp_path, zipfile):
    full = tmp_path / 'full.pth'
    torch.save({'state_dict': {'w': torch.zeros(4096)}}, full,
               _use_new_zipfile_serialization=zipfile)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(full.read_bytes()[:full.stat().st_size // 2])
    for trust in (False, True):
        with pytest.raises(CorruptCheckpointError) as info:
            load_checkpoint_file(str(cut), trust_pickle=trust)
        text = str(info.value)
        assert str(cut) in text and 'truncated or corrupt' in text
        assert 'would not help' in text  # --trust-pickle is not offered as the fix


def test_mmengine_history_buffer_is_restored_as_the_real_class(tmp_path, monkeypatch):
    """A full training checkpoint's message hub round-trips for --resume."""
    hub = MessageHub('test_fileio_hub')
    for value in (1.0, 3.0, 8.0):
        hub.update_scalar('train/loss', value)
    hub.update_info('iter', 3)
    path = tmp_path / 'iter_3.pth'
    torch.save({'message_hub': hub.state_dict(),
                'meta': {'np_scalar': np.float64(0.5), 'np_array': np.arange(3)}}, path)
    # a fresh process has no statistics registered before its first HistoryBuffer()
    monkeypatch.setattr(HistoryBuffer, '_statistics_methods', {})
    contents = load_checkpoint_file(io.BytesIO(path.read_bytes()))  # buffers work too
    buffer = contents['message_hub']['log_scalars']['train/loss']
    assert type(buffer) is HistoryBuffer
    assert buffer.mean() == 4.0 and buffer.statistics('current') == 8.0
    restored = MessageHub('test_fileio_restored')
    restored.load_state_dict(contents['message_hub'])
    assert restored.get_scalar('train/loss').data[0].tolist() == [1.0, 3.0, 8.0]
    assert contents['meta']['np_scalar'] == 0.5
    assert contents['meta']['np_array'].tolist() == [0, 1, 2]


def test_getattr_resolves_only_registered_statistics(tmp_path):
    path = tmp_path / 'x.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'x': _GetattrOnHistoryBuffer()}, path)
    before = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(UnsafeCheckpointError, match="getattr.*'update'") as info:
        load_checkpoint_file(str(path))
    assert str(path) in str(info.value)
    assert HistoryBuffer._statistics_methods == before


def test_file_cannot_register_statistics_methods(tmp_path, monkeypatch):
    """HistoryBuffer.__setstate__ writes into a class-level dict: a file must not be able
    to replace the process's statistics methods through it."""
    path = tmp_path / 'x.pth'
    with monkeypatch.context() as patch:  # a writer whose buffer carries a foreign 'mean'
        patch.setattr(HistoryBuffer, '__getstate__',
                      lambda self: {**self.__dict__, 'statistics_methods': {'mean': 'x'}})
        torch.save({'b': HistoryBuffer([1.0], [1])}, path)
    assert type(load_checkpoint_file(str(path))['b']) is HistoryBuffer
    assert callable(HistoryBuffer._statistics_methods['mean'])
    assert HistoryBuffer([2.0, 4.0], [1, 1]).mean() == 3.0


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))


# --------------------------------------------------------------------------- saving
def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / 'iter_2.pth'
    fileio.atomic_save({'w': torch.ones(3)}, path)

    def half_then_crash(f):
        f.write(b'PK\x03\x04 partial bytes')
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        fileio.atomic_write(path, half_then_crash)
    assert torch.equal(load_checkpoint_file(str(path))['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['iter_2.pth']  # no temporary left behind


def test_atomic_write_removes_temporaries_of_killed_writers(tmp_path):
    path = tmp_path / 'iter_4.pth'
    stale = tmp_path / '.iter_4.pth.12345.deadbeef.tmp'  # a writer killed mid-way
    stale.write_bytes(b'PK partial')
    other = tmp_path / '.iter_6.pth.12345.deadbeef.tmp'  # another file's: left alone
    other.write_bytes(b'PK partial')
    fileio.atomic_save({'w': torch.zeros(1)}, path)
    assert sorted(os.listdir(tmp_path)) == sorted(['iter_4.pth', other.name])


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        fileio.atomic_write_text('x', tmp_path / 'last_checkpoint')
    finally:
        os.umask(umask)
    assert (tmp_path / 'last_checkpoint').stat().st_mode & 0o777 == 0o644
    assert (tmp_path / 'last_checkpoint').read_text() == 'x'
