"""Backbones on CUDA against the CPU, on the same weights and input, in fp32.

``cuda-vs-cpu`` (marked ``cuda``): every family's default CUDA path (the ``mmssm._C_cuda``
scan, and the Triton gather/merge kernels where triton is importable) gives the outputs
and parameter gradients of its default CPU path (the ``mmssm._C`` scan) within the
tolerances below. TF32 is switched off for the test: the comparison is of fp32 arithmetic.

``cpu-kernel-vs-torch`` runs the same comparison between the CPU kernel and the pure-torch
path (``MMSSM_SCAN_BACKEND=torch``, ``MMSSM_DISABLE_TRITON=1``) everywhere, so the harness
itself is exercised on machines without a GPU.

The models are the reduced archs of ``test_amp.FAMILIES`` (every family's real layout), in
eval mode (deterministic) with a backward pass.
"""
import pytest
import torch

from mmssm.ops.kernels import backend_available
from test_amp import FAMILIES, INPUT

# Relative to the largest magnitude of the reference tensor: the two sides differ only in
# the order of fp32 sums (scan chunking, reductions, conv algorithms).
OUTPUT_RTOL = 1e-4
GRAD_RTOL = 1e-3

TORCH_PATH = {'MMSSM_SCAN_BACKEND': 'torch', 'MMSSM_DISABLE_TRITON': '1'}
PAIRS = [
    pytest.param('cpu', {}, 'cpu', TORCH_PATH, id='cpu-kernel-vs-torch'),
    pytest.param('cuda', {}, 'cpu', {}, id='cuda-vs-cpu', marks=pytest.mark.cuda),
]


def train_step(model, x, env, monkeypatch):
    """Outputs and parameter gradients of one forward + backward under ``env``."""
    with monkeypatch.context() as patch:
        for key in ('MMSSM_SCAN_BACKEND', 'MMSSM_DISABLE_TRITON'):
            patch.delenv(key, raising=False)
        for key, value in env.items():
            patch.setenv(key, value)
        model.zero_grad(set_to_none=True)
        out = model(x)
        outputs = list(out) if isinstance(out, (list, tuple)) else [out]
        # a fixed, non-uniform weighting of every output element
        loss = sum((o * torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o)).sum()
                   for o in outputs)
        loss.backward()
    grads = {name: p.grad.detach().cpu() for name, p in model.named_parameters()
             if p.grad is not None}
    return [o.detach().cpu() for o in outputs], grads


def relative_error(actual, expected):
    scale = expected.abs().max().clamp_min(1e-12)
    return float((actual.double() - expected.double()).abs().max() / scale)


@pytest.mark.parametrize('device,env,ref_device,ref_env', PAIRS)
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_backbone_matches_reference_path(family, device, env, ref_device, ref_env,
                                         monkeypatch):
    for dev in {device, ref_device}:
        needed = 'cuda' if dev == 'cuda' else 'cpu'
        if not backend_available(needed):
            pytest.skip(f'the {needed!r} selective-scan backend is not available')
    torch.manual_seed(0)
    # eval: no drop-path draws (they differ between the devices' generators) and frozen
    # BatchNorm statistics; the backward still runs through every layer.
    model = FAMILIES[family]().eval()
    x = torch.randn(*INPUT)
    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False  # fp32 convolutions, not TF32
    torch.set_float32_matmul_precision('highest')  # fp32 matmuls (the default)
    try:
        ref_out, ref_grads = train_step(model.to(ref_device), x.to(ref_device), ref_env,
                                        monkeypatch)
        out, grads = train_step(model.to(device), x.to(device), env, monkeypatch)
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])

    assert len(out) == len(ref_out)
    for i, (a, e) in enumerate(zip(out, ref_out)):
        assert a.shape == e.shape, f'{family}: output {i} shape {a.shape} vs {e.shape}'
        err = relative_error(a, e)
        assert err <= OUTPUT_RTOL, f'{family}: output {i} differs by {err:.2e} of its range'
    assert grads.keys() == ref_grads.keys()
    worst = max(grads, key=lambda n: relative_error(grads[n], ref_grads[n]))
    err = relative_error(grads[worst], ref_grads[worst])
    assert err <= GRAD_RTOL, f'{family}: gradient of {worst} differs by {err:.2e} of its range'
