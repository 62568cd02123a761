"""Checks of the CUDA selective-scan sources that need no GPU.

* ``test_cuda_sources_compile``: every ``.cu`` under ``csrc/`` compiles with ``nvcc``
  for sm_80 with torch's include directories on the path, as CI does (skipped when
  ``nvcc`` is not installed).
* ``test_cuda_kernels_emulated``: the kernels, compiled by the host C++ compiler
  against a CPU emulation of the CUDA intrinsics they use
  (``csrc/selective_scan/cuda/tests/cuda_emulation.h``), run the standalone harness
  (``scan_harness.cu --quick``): forward and backward of every launch tier, dtype and
  option, checked against a float64 reference whose gradients are themselves checked
  by finite differences (skipped without a C++ compiler).
"""
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / 'csrc'
SCAN_DIR = CSRC / 'selective_scan'
CUDA_DIR = SCAN_DIR / 'cuda'
JOBS = 2  # the test machines have 2 cores


def _find_nvcc():
    nvcc = shutil.which('nvcc')
    if nvcc:
        return nvcc
    for home in (os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH'), '/usr/local/cuda'):
        if home and os.access(os.path.join(home, 'bin', 'nvcc'), os.X_OK):
            return os.path.join(home, 'bin', 'nvcc')
    return None


def _run_all(commands):
    """Run the commands JOBS at a time; return [(command, returncode, output)]."""

    def run(cmd):
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return cmd, proc.returncode, proc.stdout

    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        return list(pool.map(run, commands))


def _assert_all_ok(results, what):
    failures = [f'$ {" ".join(map(str, cmd))}\n{out}' for cmd, rc, out in results if rc != 0]
    assert not failures, f'{what} failed:\n' + '\n'.join(failures)


def test_cuda_sources_compile(tmp_path):
    nvcc = _find_nvcc()
    if nvcc is None:
        pytest.skip('nvcc not found (PATH, CUDA_HOME, /usr/local/cuda): cannot compile '
                    'the CUDA sources on this machine')
    from torch.utils.cpp_extension import include_paths
    sources = sorted(CSRC.rglob('*.cu'))
    assert sources, f'no .cu files under {CSRC}'
    includes = [f'-I{p}' for p in [SCAN_DIR, *include_paths()]]
    commands = [[
        nvcc, '-std=c++17', '-O3', '--use_fast_math', '--expt-relaxed-constexpr',
        '-gencode', 'arch=compute_80,code=sm_80', *includes, '-c', str(src), '-o',
        str(tmp_path / f'{i}_{src.stem}.o')
    ] for i, src in enumerate(sources)]
    start = time.perf_counter()
    results = _run_all(commands)
    print(f'compiled {len(sources)} CUDA sources in {time.perf_counter() - start:.1f} s')
    _assert_all_ok(results, 'nvcc')


def test_cuda_kernels_emulated(tmp_path):
    cxx = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')
    if cxx is None:
        pytest.skip('no C++ compiler (CXX, g++, c++) to build the emulated CUDA kernels')
    sources = sorted(CUDA_DIR.glob('*.cu')) + [CUDA_DIR / 'tests' / 'scan_harness.cu']
    flags = ['-std=c++17', '-O1', '-DMMSSM_SCAN_EMULATION', f'-I{SCAN_DIR}']
    objects = [tmp_path / f'{src.stem}.o' for src in sources]
    start = time.perf_counter()
    _assert_all_ok(
        _run_all([[cxx, *flags, '-x', 'c++', '-c', str(src), '-o', str(obj)]
                  for src, obj in zip(sources, objects)]), 'emulation build')
    binary = tmp_path / 'scan_emulated'
    _assert_all_ok(_run_all([[cxx, *map(str, objects), '-o', str(binary)]]), 'emulation link')
    built = time.perf_counter()
    proc = subprocess.run([str(binary), '--quick'], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    print(proc.stdout)
    print(f'emulation: build {built - start:.1f} s, run {time.perf_counter() - built:.1f} s')
    assert proc.returncode == 0 and 'FAIL' not in proc.stdout, (
        f'emulated kernels disagree with the reference:\n{proc.stdout}')
