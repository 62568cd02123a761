"""glibc's heap policy for CPU inference: keep freed memory for the next call.

glibc serves a large block from a fresh ``mmap`` (returned to the OS on ``free``) unless
it is below a threshold that it raises, call by call, to the largest block freed so far,
and it hands the top of its heap back to the OS once more than twice that threshold is
free there. A backbone's forward allocates and frees maps of a few MiB in an order that
can keep tripping both rules: every call then page-faults its memory in afresh (on the
CI VM up to 27,000 faults and 30 % of MSVMamba-T's time per forward at 224 x 224, 5,500-
7,300 for mmpretrain's Swin-T; docs/benchmarks.md, "glibc's heap").

:func:`steady_heap` sets the policy for the whole process (``mallopt``): blocks up to
32 MiB (glibc's own upper bound for the threshold) come from the heap, and up to 1 GiB
of free heap is kept. The same policy from the shell, for any program::

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 python infer.py

``tools/test.py`` and ``tools/train.py`` apply it on machines without CUDA
(:func:`steady_heap_for_cpu_run`; ``MMSSM_STEADY_HEAP=0`` keeps glibc's own policy), the
CPU benchmarks for every model they time (``--heap steady``). Other C libraries are left
alone; with jemalloc or tcmalloc preloaded the setting has no effect (they keep memory
by their own policies).
"""
import ctypes
import ctypes.util
import functools
import os
from typing import Optional

import torch

STEADY_MMAP_THRESHOLD = 32 << 20  # bytes; glibc's maximum for its dynamic threshold
STEADY_TRIM_THRESHOLD = 1 << 30  # bytes of free heap kept
ENV_SWITCH = 'MMSSM_STEADY_HEAP'

# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.lru_cache(maxsize=None)
def _glibc() -> Optional[ctypes.CDLL]:
    """The process's glibc (None for another C library or platform)."""
    try:
        if not os.confstr('CS_GNU_LIBC_VERSION'):
            return None
    except (AttributeError, ValueError, OSError):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None
    return libc if hasattr(libc, 'mallopt') else None


def steady_heap(mmap_threshold: int = STEADY_MMAP_THRESHOLD,
                trim_threshold: int = STEADY_TRIM_THRESHOLD) -> bool:
    """Keep freed memory in glibc's heap for the rest of the process (see the module
    docstring): blocks up to ``mmap_threshold`` bytes come from the heap, and up to
    ``trim_threshold`` bytes of free heap are kept instead of being returned to the OS.

    Returns:
        True if glibc took both settings; False where the process does not run on glibc
        (nothing is changed then).
    """
    for name, value in (('mmap_threshold', mmap_threshold),
                        ('trim_threshold', trim_threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
            raise ValueError(f'steady_heap: {name} must be a positive int below 2**31 '
                             f'bytes, got {value!r}')
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def trim_heap() -> bool:
    """Hand glibc's free heap memory back to the OS now (``malloc_trim(0)``; the
    benchmarks do it before measuring a step's peak memory). False off glibc."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def steady_heap_for_cpu_run() -> bool:
    """:func:`steady_heap` for a run on a machine without CUDA, unless the environment
    variable ``MMSSM_STEADY_HEAP`` is ``0`` (``1`` applies it with CUDA too). Returns
    whether the policy was set."""
    switch = os.environ.get(ENV_SWITCH, '').strip()
    if switch not in ('', '0', '1'):
        raise ValueError(f'{ENV_SWITCH} must be 0 (glibc\'s own heap policy) or 1 (keep '
                         f'freed memory, also with CUDA), got {switch!r}')
    if switch == '0' or (switch == '' and torch.cuda.is_available()):
        return False
    return steady_heap()
