"""Helpers of the CPU kernel tests (imported by the test files beside this one).

* :func:`run_with_cpu_isa`: run a child script with ``MMSSM_CPU_ISA`` set, to reach the
  kernels compiled for a lower instruction set (the variable is read once per process).
* :func:`for_thread_counts`: the results of one call under several torch thread counts.
"""
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def run_with_cpu_isa(isa: str, child: str, payload, tmp_path: Path, timeout: int = 600):
    """Run the Python source ``child`` in a fresh process with ``MMSSM_CPU_ISA=isa``,
    ``sys.argv[1]`` a file holding ``torch.save(payload)`` and ``sys.argv[2]`` the file
    the child writes its results to with ``torch.save``; return those results."""
    inputs, outputs = tmp_path / f'{isa}-in.pt', tmp_path / f'{isa}-out.pt'
    torch.save(payload, inputs)
    env = dict(os.environ, MMSSM_CPU_ISA=isa,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', child, str(inputs), str(outputs)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return torch.load(outputs)


def for_thread_counts(fn, counts=(1, 2)):
    """[fn() with torch.set_num_threads(n) for n in counts]; the thread count is restored."""
    before = torch.get_num_threads()
    try:
        results = []
        for n in counts:
            torch.set_num_threads(n)
            results.append(fn())
        return results
    finally:
        torch.set_num_threads(before)
