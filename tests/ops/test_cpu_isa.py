"""The CPU kernels compiled for the other instruction sets.

``mmssm._C`` carries the kernels three times (baseline x86-64 / SSE, AVX2 + FMA, AVX-512;
csrc/selective_scan/cpu/scan_cpu_kernels_*.cpp) and picks the best the CPU has, so the
rest of the op tests exercise only that one. ``MMSSM_CPU_ISA`` (read once per process)
lowers the choice: here each lower set runs forward + backward in a subprocess and is
checked against the float64 reference with the tolerances of test_selective_scan.py.
"""
import pytest
import torch
from cpu_runs import run_with_cpu_isa

from mmssm.ops import selective_scan_reference
from mmssm.ops.kernels import backend_available

# (L, N, G, dtype, gate): partial blocks and tiles, N = 1 / 16 / other, every dtype.
CASES = [(130, 1, 4, torch.float32, True), (100, 16, 1, torch.bfloat16, True),
         (70, 5, 2, torch.float16, False), (40, 16, 2, torch.float64, True)]
BATCH, DIM = 2, 40  # DIM / G is not a multiple of any SIMD width
TOL = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3),
       torch.bfloat16: (3e-2, 5e-2), torch.float64: (1e-9, 1e-9)}
NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')

CHILD = r'''
import sys, torch
from mmssm.ops import selective_scan
cases = torch.load(sys.argv[1])
results = []
for inputs, grad in cases:
    leaves = {k: (None if t is None else t.clone().requires_grad_(True))
              for k, t in inputs.items()}
    out, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True,
                               backend='cpu')
    out.backward(grad)
    results.append((out.detach(), last, {k: t.grad for k, t in leaves.items()
                                         if t is not None}))
torch.save(results, sys.argv[2])
'''


def make_case(seqlen, dstate, groups, dtype, gate, seed):
    gen = torch.Generator().manual_seed(seed)
    act = dtype if dtype != torch.float64 else torch.float64
    weight = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(*shape, dt=act):
        return torch.randn(*shape, generator=gen).to(dt)

    inputs = dict(
        u=randn(BATCH, DIM, seqlen),
        delta=(0.5 * torch.rand(BATCH, DIM, seqlen, generator=gen)).to(act),
        A=(-0.5 * torch.rand(DIM, dstate, generator=gen)).to(weight),
        B=randn(BATCH, groups, dstate, seqlen), C=randn(BATCH, groups, dstate, seqlen),
        D=randn(DIM, dt=weight), z=randn(BATCH, DIM, seqlen) if gate else None,
        delta_bias=(0.5 * torch.rand(DIM, generator=gen)).to(weight))
    return inputs, randn(BATCH, DIM, seqlen)


def close(name, actual, expected, rtol, atol):
    a, e = actual.double(), expected.double()
    excess = ((a - e).abs() - (atol + rtol * e.abs())).max().item()
    assert excess <= 0, f'{name}: exceeds atol={atol} + rtol={rtol} * |expected| by {excess:.3g}'


@pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
@pytest.mark.parametrize('isa', ['generic', 'avx2'])
def test_instruction_set_matches_reference(isa, tmp_path):
    cases = [make_case(*case, seed=i) for i, case in enumerate(CASES)]
    results = run_with_cpu_isa(isa, CHILD, cases, tmp_path)
    for (inputs, grad), (out, last, grads), case in zip(cases, results, CASES):
        dtype = case[3]
        rtol, atol = TOL[dtype]
        ref = {k: (None if t is None else t.double().requires_grad_(True))
               for k, t in inputs.items()}
        ref_out, ref_last = selective_scan_reference(**ref, delta_softplus=True,
                                                     return_last_state=True)
        ref_out.backward(grad.double())
        label = f'{isa} L={case[0]} N={case[1]} {str(dtype)[6:]}'
        close(f'{label} out', out, ref_out, rtol, atol)
        close(f'{label} last_state', last, ref_last, rtol, atol)
        for name in NAMES:
            if ref[name] is not None:
                w = name in ('A', 'D', 'z', 'delta_bias')
                r, a = (max(rtol, 1e-3), max(atol, 1e-3)) if w else (rtol, atol)
                scale = 10 if name in ('delta', 'A') else 2
                close(f'{label} d{name}', grads[name], ref[name].grad, scale * r, scale * a)
