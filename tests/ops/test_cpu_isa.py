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

from mmssm.ops import selective_scan, selective_scan_reference
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


# Edge values through every instruction set's polynomial exp / exp2 / softplus and their
# clamps (cpu_math.h): a nan time step, time steps far below / above softplus'
# threshold, a decay that underflows. Float32, N = 1 and 16, softplus on (each case
# says: `delta_softplus`).
EDGE_CHILD = r'''
import sys, torch
from mmssm.ops import selective_scan
results = []
for inputs in torch.load(sys.argv[1]):
    results.append(selective_scan(**inputs, backend='cpu'))
torch.save(results, sys.argv[2])
'''


def edge_cases():
    cases = []
    for dstate in (1, 16):
        gen = torch.Generator().manual_seed(dstate)
        dim, seqlen = 20, 70
        delta = 0.5 * torch.rand(1, dim, seqlen, generator=gen)
        A = -0.5 * torch.rand(dim, dstate, generator=gen)
        delta[0, 0, 5] = float('nan')  # channel 0: nan from step 5 on
        delta[0, 1] = -100.0           # softplus(-100) = 3.7e-44 (kept at ~2.4e-38)
        delta[0, 2] = 1e4              # above the threshold: dt = delta
        A[3] = -1e4                    # dt A ~ -1e3: the decay underflows (2^-125)
        cases.append(dict(u=torch.randn(1, dim, seqlen, generator=gen), delta=delta, A=A,
                          B=torch.randn(1, 1, dstate, seqlen, generator=gen),
                          C=torch.randn(1, 1, dstate, seqlen, generator=gen),
                          D=torch.randn(dim, generator=gen), delta_softplus=True))
    return cases


def run_edge_cases(isa, cases, tmp_path):
    """The forward of every case on `isa` ('native': in this process)."""
    if isa == 'native':
        return [selective_scan(**inputs, backend='cpu') for inputs in cases]
    return run_with_cpu_isa(isa, EDGE_CHILD, cases, tmp_path)


def reference_of(inputs):
    return selective_scan_reference(
        **{k: v if isinstance(v, bool) else v.double() for k, v in inputs.items()})


def check_edges(label, inputs, out):
    ref = reference_of(inputs)
    assert not out[0, 0, :5].isnan().any() and out[0, 0, 5:].isnan().all(), \
        f'{label}: a nan time step must make that channel nan from its step on, only'
    rest = out[:, 1:]
    assert torch.isfinite(rest).all(), f'{label}: non-finite output without a nan input'
    # dt = 1e4 with |A| <= 0.5: every decay is 0 (1e-38 at most) and dt B u is ~1e4
    close(f'{label} edge values', rest, ref[:, 1:], 1e-4, 1e-3)


@pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
@pytest.mark.parametrize('isa', ['generic', 'avx2', 'native'])
def test_instruction_set_edge_values(isa, tmp_path):
    cases = edge_cases()
    for inputs, out in zip(cases, run_edge_cases(isa, cases, tmp_path)):
        check_edges(f'{isa} N={inputs["A"].shape[1]}', inputs, out)


# States that grow past float32's range: decay exponents dt A log2(e) far above 128, from
# a positive A with softplus on, and from a negative dt with it off. The kernels compute
# the decays of a tile with M::decay_exp2 only where every exponent is <= 0 or nan
# (softplus on and every A <= 0; scan_cpu_kernels.h: lane_constants_log2e); its scale
# would wrap around there, so these tiles must take the clamped exp2, which saturates.
def growth_cases():
    cases = []
    dim, seqlen = 20, 12
    for dstate in (1, 16):
        A = torch.full((dim, dstate), -0.5)
        A[17, 0] = 200.0  # dt = softplus(0.5) ~ 0.97: exponent ~ 281 in channel 17 only
        common = dict(u=torch.ones(1, dim, seqlen), A=A,
                      B=torch.ones(1, 1, dstate, seqlen), C=torch.ones(1, 1, dstate, seqlen),
                      D=torch.zeros(dim))
        cases.append(dict(common, delta=torch.full((1, dim, seqlen), 0.5),
                          delta_softplus=True))
        # dt = -300, A = -0.5 everywhere but channel 17: exponent ~ 216
        cases.append(dict(common, A=torch.full((dim, dstate), -0.5),
                          delta=torch.full((1, dim, seqlen), -300.0), delta_softplus=False))
    return cases


def check_growth(label, inputs, out):
    ref = reference_of(inputs)
    out = out.double()
    grows = ref.abs() > 1e6
    assert grows.any() and not out.isnan().any(), f'{label}: nan, or nothing grows'
    assert (out[grows].sign() == ref[grows].sign()).all(), f'{label}: growth changed sign'
    assert (out[grows].abs() >= 0.999 * ref[grows].abs().clamp(max=1e38)).all(), \
        f'{label}: a growing state fell back (a decay exponent above 128 wrapped around)'
    close(f'{label} before growing', out[~grows], ref[~grows], 1e-4, 1e-3)


@pytest.mark.skipif(not backend_available('cpu'), reason='mmssm._C is not built')
@pytest.mark.parametrize('isa', ['generic', 'avx2', 'native'])
def test_instruction_set_growing_states(isa, tmp_path):
    cases = growth_cases()
    for inputs, out in zip(cases, run_edge_cases(isa, cases, tmp_path)):
        check_growth(f'{isa} N={inputs["A"].shape[1]} softplus={inputs["delta_softplus"]}',
                     inputs, out)
