"""Reading checkpoint files without running code from them; writing them atomically.

Every checkpoint mmssm reads -- official classification/detection/segmentation files,
mmssm conversions, full mmengine training checkpoints -- goes through
:func:`load_checkpoint_file`. It keeps ``torch.load(weights_only=True)`` and allow-lists
what real checkpoints embed besides tensors:

* upstream config objects (yacs ``CfgNode``, mmengine/mmcv ``ConfigDict``, ``addict.Dict``),
  rebuilt as ``OrderedDict`` -- the data is all anybody reads from them;
* ``argparse.Namespace`` (Vim) and ``pathlib`` paths, rebuilt as inert
  :class:`OpaqueObject` stand-ins that hold the pickled fields and have no behaviour;
* mmengine's ``HistoryBuffer`` (the message hub of every full training checkpoint),
  rebuilt as the real class so that ``--resume`` restores the logs as before. Its
  pickled statistics methods (``getattr(HistoryBuffer, 'mean')``) resolve only to the
  methods already registered in this process;
* numpy arrays, scalars and dtypes (non-object data only).

Anything else is refused with an error naming the file and the offending globals. The
opt-in to a full unpickle is per file: ``trust_pickle=True`` (the tools'
``--trust-pickle``), :func:`trust_file` before an mmengine load, or an explicit
``torch.load(..., weights_only=False)`` passed by the caller (see ``mmssm/compat.py``).

Writing: :func:`atomic_save` / :func:`atomic_write` never leave a partial file under the
final name (temporary file in the same directory, flush, fsync, rename); mmengine's
checkpoint saving uses them through ``mmssm/compat.py``.

This module sits below the models in the import order (ops -> fileio -> models ->
converters -> apis -> tools) and imports nothing from mmssm.
"""
import glob
import io
import os
import os.path as osp
import pickle
import re
import threading
import uuid
from collections import OrderedDict
from typing import IO, Any, Callable, Iterable, Optional, Set, Union

import torch

__all__ = ['OpaqueObject', 'UnsafeCheckpointError', 'CorruptCheckpointError',
           'load_checkpoint_file', 'trust_file', 'is_trusted', 'TRUST_HELP',
           'KNOWN_UPSTREAM_GLOBALS', 'preview', 'atomic_write', 'atomic_save',
           'atomic_write_text']

PathOrFile = Union[str, os.PathLike, IO[bytes]]

TRUST_HELP = (
    'Unpickle the checkpoint fully (torch.load(weights_only=False)). By default a file is '
    'loaded with weights_only=True plus an allow-list of the objects real checkpoints '
    'embed (yacs CfgNode, argparse.Namespace, mmcv 1.x / mmengine ConfigDict, mmengine '
    'HistoryBuffer, numpy scalars/arrays), which never runs code from the file. A file '
    'that references anything else is refused with the names of those objects; pass this '
    'flag only for files from a source you trust, because full unpickling can execute '
    'arbitrary code.')


def preview(names: Iterable[str], limit: int = 6) -> str:
    """``'a, b, c ... (+N more)'``: the first ``limit`` names of a list for a message."""
    names = list(names)
    more = f' ... (+{len(names) - limit} more)' if len(names) > limit else ''
    return ', '.join(str(n) for n in names[:limit]) + more


class UnsafeCheckpointError(RuntimeError):
    """The file needs objects outside the allow-list (code could run on a full load)."""


class CorruptCheckpointError(RuntimeError):
    """The file is empty, truncated or not a checkpoint at all."""


# --------------------------------------------------------------------------- per-file trust
_trusted: Set[str] = set()
_trust_lock = threading.Lock()


def _key(path: Union[str, os.PathLike]) -> str:
    path = os.fspath(path)
    return path if '://' in path else osp.realpath(path)  # URLs as they are


def trust_file(path: Union[str, os.PathLike]) -> None:
    """Opt in to full unpickling of this one file (a path or a URL that mmengine
    downloads) for the rest of the process.

    Used by the tools' ``--trust-pickle`` for the checkpoint they were given, so that
    mmengine's loaders (``load_from``, ``--resume``, ``tools/test.py``) accept it. Only
    this file is affected; every other one is still loaded safely.
    """
    with _trust_lock:
        _trusted.add(_key(path))


def is_trusted(path: Union[str, os.PathLike]) -> bool:
    with _trust_lock:
        return _key(path) in _trusted


# --------------------------------------------------------------------------- allow-list
class OpaqueObject:
    """Inert stand-in for a pickled upstream object (argparse args, paths).

    It accepts the pickle protocol's construction and state-setting calls and keeps
    the data it is given as attributes, but has none of the original class's methods.
    """

    def __init__(self, *args, **kwargs):
        self.args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.state = state

    def __repr__(self):
        return f'{type(self).__name__}({self.__dict__})'


# Upstream dict subclasses (config nodes) are rebuilt as OrderedDict: torch's restricted
# unpickler can fill only built-in mappings, and the data is all we need.
_MAPPING_GLOBALS = (
    'yacs.config.CfgNode',  # VMamba / MSVMamba / EfficientVMamba classification ckpts
    'mmengine.config.config.ConfigDict',
    'mmcv.utils.config.ConfigDict',  # mmcv 1.x / mmseg 0.x (Vim segmentation ckpts)
    'addict.addict.Dict',
)
# Plain objects kept as inert stand-ins.
_OBJECT_GLOBALS = (
    'argparse.Namespace',  # Vim classification ckpts ('args')
    'pathlib.PosixPath',
)
_HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'  # mmengine full ckpts
# registered by HistoryBuffer._set_default_statistics (at the first instance)
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')
# numpy constructors found in mmengine/mmdet meta data (numpy 2 renamed numpy.core to
# numpy._core; files written under either name exist).
_NUMPY_MULTIARRAY = ('scalar', '_reconstruct')
_NUMPY_GLOBALS = tuple(f'numpy.{core}.multiarray.{name}' for core in ('core', '_core')
                       for name in _NUMPY_MULTIARRAY) + ('numpy.dtype', 'numpy.ndarray')
_NUMPY_DTYPES = ('float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8',
                 'uint8', 'bool')
KNOWN_UPSTREAM_GLOBALS = _MAPPING_GLOBALS + _OBJECT_GLOBALS + (_HISTORY_BUFFER, ) + \
    _NUMPY_GLOBALS + ('builtins.getattr', 'builtins.set')

_STAND_INS = {name: type(name.rsplit('.', 1)[-1], (OpaqueObject, ),
                         {'__module__': __name__, '__qualname__': name.rsplit('.', 1)[-1]})
              for name in _OBJECT_GLOBALS + (_HISTORY_BUFFER, )}


def _history_buffer():
    """mmengine's HistoryBuffer class (the stand-in if mmengine is not installed)."""
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return _STAND_INS[_HISTORY_BUFFER]
    return HistoryBuffer


def _safe_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` during safe loading.

    mmengine's ``HistoryBuffer.__getstate__`` pickles its statistics methods as
    ``getattr(HistoryBuffer, 'min')``. Only those look-ups are answered: a method of
    ``HistoryBuffer`` that is registered as a statistics method in this process, or any
    attribute of an inert stand-in (a descriptive string). Anything else is refused,
    since a real getattr on an allow-listed object could reach methods with side effects
    (e.g. ``ndarray.tofile``).
    """
    owner = obj if isinstance(obj, type) else type(obj)
    if isinstance(name, str):
        if issubclass(owner, OpaqueObject):
            return f'<{owner.__name__}.{name}>'
        buffer = _history_buffer()
        if owner is buffer:
            registered = getattr(buffer, '_statistics_methods', {})
            method = buffer.__dict__.get(name)
            if method is not None and (name in _DEFAULT_STATISTICS
                                       or registered.get(name) is method):
                return method
    raise UnsafeCheckpointError(
        f'checkpoint asks for getattr({owner.__name__}, {name!r}); only the statistics '
        'methods of mmengine HistoryBuffer and attributes of inert stand-ins are resolved')


def _numpy_allow_list() -> list:
    try:
        import numpy as np
    except ImportError:  # numpy-free environments only lose numpy metadata support
        return []
    core = getattr(np, '_core', None) or np.core
    allow = [(getattr(core.multiarray, name), f'numpy.{prefix}.multiarray.{name}')
             for prefix in ('core', '_core') for name in _NUMPY_MULTIARRAY]
    allow += [(np.dtype, 'numpy.dtype'), (np.ndarray, 'numpy.ndarray')]
    for name in _NUMPY_DTYPES:
        cls = type(np.dtype(name))
        allow.append((cls, f'numpy.dtypes.{cls.__name__}'))
    return allow


def _allow_list() -> list:
    allow = [(OrderedDict, name) for name in _MAPPING_GLOBALS]
    allow += [(_STAND_INS[name], name) for name in _OBJECT_GLOBALS]
    allow.append((_history_buffer(), _HISTORY_BUFFER))
    allow.append((set, 'builtins.set'))
    allow.append((_safe_getattr, 'builtins.getattr'))
    return allow + _numpy_allow_list()


_GLOBAL_RE = re.compile(r'GLOBAL ([\w.]+)')
_load_lock = threading.RLock()


def _describe(f: PathOrFile) -> str:
    if isinstance(f, (str, os.PathLike)):
        return repr(os.fspath(f))
    name = getattr(f, 'name', None)
    return repr(name) if isinstance(name, str) else f'<{type(f).__name__}>'


def _size(f: PathOrFile) -> Optional[int]:
    if isinstance(f, (str, os.PathLike)):
        return osp.getsize(f)
    try:
        pos = f.tell()
        f.seek(0, io.SEEK_END)
        size = f.tell()
        f.seek(pos)
        return size
    except (AttributeError, OSError, ValueError):
        return None


def _rewind(f: PathOrFile) -> None:
    if not isinstance(f, (str, os.PathLike)):
        f.seek(0)


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if not lines:  # e.g. a bare EOFError
        return type(err).__name__
    return lines[0].strip().split('. ')[0].rstrip('.')


def _corrupt(what: str, size: Optional[int], err: BaseException) -> CorruptCheckpointError:
    hint = (f'{size} bytes' if size is not None else 'size unknown')
    return CorruptCheckpointError(
        f'could not read checkpoint {what} ({hint}): {type(err).__name__}: '
        f'{_first_line(err)}. The file looks truncated or corrupt (an interrupted '
        'download or save?): download or save it again. This is not a trust problem: '
        '--trust-pickle / weights_only=False would not help.')


def _unknown_globals(f: PathOrFile, err: BaseException) -> Optional[list]:
    """Globals of the file outside the allow-list; None if the file cannot be parsed."""
    try:
        _rewind(f)
        with torch.serialization.safe_globals(_allow_list()):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except ValueError:  # legacy (non-zip) format: only what the error message says
        names = _GLOBAL_RE.findall(str(err))
    except Exception:  # noqa: BLE001 - an unreadable file, reported by the caller
        return None
    return sorted(set(names) - set(KNOWN_UPSTREAM_GLOBALS))


def load_checkpoint_file(f: PathOrFile, trust_pickle: bool = False,
                         map_location: Any = 'cpu') -> Any:
    """Load a checkpoint without executing code from it.

    Args:
        f: a path or a binary file object (mmengine's ceph/pavi loaders pass buffers).
        trust_pickle: fall back to ``torch.load(weights_only=False)`` -- only for files
            you trust, because unpickling can run arbitrary code. A path registered
            with :func:`trust_file` is trusted too.
        map_location: forwarded to :func:`torch.load`.

    Returns:
        Whatever the file holds, with upstream objects replaced as described in the
        module docstring (tensors untouched).

    Raises:
        FileNotFoundError: no such file.
        CorruptCheckpointError: the file is empty, truncated or not a checkpoint.
        UnsafeCheckpointError: the file references objects outside the allow-list (the
            message names them, the file and the opt-in).
    """
    what = _describe(f)
    if isinstance(f, (str, os.PathLike)):
        if not osp.isfile(f):
            raise FileNotFoundError(f'checkpoint file not found: {what}')
        trust_pickle = trust_pickle or is_trusted(f)
    size = _size(f)
    if size == 0:
        raise CorruptCheckpointError(
            f'checkpoint {what} is empty (0 bytes): an interrupted download or save? '
            'Download or save it again.')
    if trust_pickle:
        try:
            return torch.load(f, map_location=map_location, weights_only=False)
        except Exception as err:  # noqa: BLE001 - corrupt files reported as such
            if _looks_corrupt(err):
                raise _corrupt(what, size, err) from err
            raise
    buffer = _history_buffer()
    registered = getattr(buffer, '_statistics_methods', None)
    if isinstance(registered, dict):  # what the first HistoryBuffer() would register
        for name in _DEFAULT_STATISTICS:
            registered.setdefault(name, buffer.__dict__[name])
    methods = dict(registered or {})
    try:
        with _load_lock, torch.serialization.safe_globals(_allow_list()):
            return torch.load(f, map_location=map_location, weights_only=True)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f'refused to load checkpoint {what}: {err}.\n'
                                    + _opt_in_text()) from err
    except Exception as err:  # noqa: BLE001 - classified and re-raised below
        unknown = _unknown_globals(f, err)
        if unknown:
            raise UnsafeCheckpointError(
                f'refused to load checkpoint {what}: it references objects outside the '
                f'allow-list of mmssm.fileio: {", ".join(unknown)}. Loading it fully '
                'would let the file run code.\n' + _opt_in_text()) from err
        if unknown is None or 'Weights only load failed' not in str(err):
            raise _corrupt(what, size, err) from err
        raise UnsafeCheckpointError(f'refused to load checkpoint {what} safely: '
                                    f'{_first_line(err)}.\n' + _opt_in_text()) from err
    finally:
        # A file cannot register statistics methods of its own into the shared class.
        if isinstance(registered, dict):
            registered.clear()
            registered.update(methods)


def _looks_corrupt(err: BaseException) -> bool:
    if isinstance(err, (EOFError, OSError, KeyError, pickle.UnpicklingError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        word in text for word in ('eof', 'zip archive', 'corrupt', 'truncated'))


def _opt_in_text() -> str:
    return ('If you trust this file, opt in for it: --trust-pickle on the mmssm tools '
            '(tools/train.py, tools/test.py, converters, analysis tools), '
            'trust_pickle=True in a Pretrained init_cfg, or from Python '
            'mmssm.fileio.trust_file(path) / torch.load(path, weights_only=False). '
            'A full unpickle can run arbitrary code embedded in the file.')



# --------------------------------------------------------------------------- saving
def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary_name(path: str) -> str:
    directory, name = osp.split(path)
    return osp.join(directory, f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')


def _remove_stale_temporaries(path: str) -> None:
    """Temporaries of ``path`` left by writers that were killed (``.NAME.*.tmp``)."""
    directory, name = osp.split(path)
    for stale in glob.glob(osp.join(glob.escape(directory), f'.{glob.escape(name)}.*.tmp')):
        try:
            os.remove(stale)
        except OSError:
            pass


def atomic_write(path: Union[str, os.PathLike], write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that ``path`` holds either its old contents or the complete new ones.

    ``write(f)`` fills a temporary file in the same directory, which is flushed, fsynced
    and renamed over ``path`` (``os.replace``: atomic within one file system); the
    directory is fsynced after the rename. A process killed at any point leaves no
    partial file under ``path``, only a ``.NAME.<pid>.<id>.tmp`` that the next write of
    ``path`` removes. The file gets the usual permissions (umask), like ``open(path, 'wb')``.
    """
    path = osp.abspath(os.fspath(path))
    directory = osp.dirname(path)
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(path)
    temporary = _temporary_name(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def atomic_save(obj: Any, path: Union[str, os.PathLike], **kwargs) -> None:
    """``torch.save(obj, path, **kwargs)`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f, **kwargs))


def atomic_write_text(text: str, path: Union[str, os.PathLike]) -> None:
    """Replace a small text file (e.g. mmengine's ``last_checkpoint``) atomically."""
    atomic_write(path, lambda f: f.write(text.encode('utf-8')))
