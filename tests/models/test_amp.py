"""Mixed precision: every backbone family trains under ``torch.autocast``.

For each family (a reduced arch dict of its real layout, so the test stays fast) one
training step (forward, loss, backward) under autocast must give finite outputs, loss
and gradients, reach every trainable parameter, and hand the selective scan activations
of one dtype (u, delta, B, C and z; the weights A, D and delta_bias stay fp32). In eval
mode the autocast outputs must stay close to the fp32 ones.

CPU runs bf16 autocast on the default scan backend (``MMSSM_SCAN_BACKEND`` picks another);
the CUDA fp16 variant is the same test, skipped without a GPU.
"""
import sys

import pytest
import torch

import mmssm.models  # noqa: F401  (registers the backbones)
from mmssm.models.backbones.efficient_vmamba import EfficientVMamba
from mmssm.models.backbones.mobilemamba import MobileMamba
from mmssm.models.backbones.msvmamba import MSVMamba
from mmssm.models.backbones.vim import Vim
from mmssm.models.backbones.vmamba import VMamba
from mmssm.ops import selective_scan as selective_scan_fn

FAMILIES = {
    # VMamba v2 layout (no gate, d_state 1, conv stem, conv downsample, MLP)
    'vmamba_v2': lambda: VMamba(arch=dict(
        depths=(1, 1, 1, 1), dims=16, d_state=1, ssm_ratio=1.0, mlp_ratio=2.0, gated=False,
        conv_bias=False, patch_embed='v2', downsample='v3')),
    # Vanilla VMamba v0 layout (gated, d_state 16, patch merging, no MLP)
    'vmamba_v0': lambda: VMamba(arch=dict(
        depths=(1, 1, 1, 1), dims=16, d_state=16, ssm_ratio=2.0, mlp_ratio=0.0, gated=True,
        conv_bias=True, patch_embed='v1', downsample='v1')),
    'msvmamba': lambda: MSVMamba(arch=dict(dims=16, depths=(1, 1, 1, 1))),
    'efficientvmamba': lambda: EfficientVMamba(arch=dict(dims=16, depths=(1, 1, 1, 1))),
    'mobilemamba': lambda: MobileMamba(arch=dict(embed_dims=[32, 48, 64], depths=[1, 1, 1]),
                                       out_indices=(0, 1, 2, 3)),
    'vim': lambda: Vim(arch=dict(embed_dims=32, depth=2), img_size=64, out_indices=(0, 1)),
}
PRECISIONS = [
    pytest.param('cpu', torch.bfloat16, id='cpu-bf16'),
    pytest.param('cuda', torch.float16, id='cuda-fp16', marks=pytest.mark.cuda),
]
INPUT = (2, 3, 48, 48)  # stage maps 12, 6, 3 (odd), 2 for the stride-4 families


@pytest.fixture
def scan_calls(monkeypatch):
    """Record the dtypes every ``selective_scan`` call receives, wherever a backbone
    module imported the function from."""
    calls = []

    def spy(u, delta, A, B, C, D=None, z=None, delta_bias=None, *args, **kwargs):
        calls.append(dict(activations={name: t.dtype for name, t in
                                       (('u', u), ('delta', delta), ('B', B), ('C', C),
                                        ('z', z)) if t is not None},
                          weights={name: t.dtype for name, t in
                                   (('A', A), ('D', D), ('delta_bias', delta_bias))
                                   if t is not None}))
        return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, *args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith('mmssm.') and getattr(module, 'selective_scan', None) is \
                selective_scan_fn:
            monkeypatch.setattr(module, 'selective_scan', spy)
    return calls


def _outputs(model, x):
    out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize('device,dtype', PRECISIONS)
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_autocast_training_step(family, device, dtype, scan_calls):
    model = FAMILIES[family]().to(device).train()
    x = torch.randn(*INPUT, device=device)
    with torch.autocast(device, dtype=dtype):
        outputs = _outputs(model, x)
        loss = sum(out.float().pow(2).mean() for out in outputs)
    loss.backward()

    for i, out in enumerate(outputs):
        assert torch.isfinite(out).all(), f'{family}: output {i} has NaN/Inf under autocast'
    assert torch.isfinite(loss), f'{family}: loss {loss.item()}'
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'{family}: no gradient reached {missing}'
    bad = [n for n, p in model.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f'{family}: NaN/Inf gradients in {bad}'

    assert scan_calls, f'{family}: the selective scan was never called'
    for call in scan_calls:
        dtypes = set(call['activations'].values())
        assert len(dtypes) == 1, f'{family}: selective_scan got mixed activation dtypes ' \
                                 f'{call["activations"]}'
        assert dtypes <= {dtype, torch.float32}, call
        assert set(call['weights'].values()) == {torch.float32}, call


@pytest.mark.parametrize('device,dtype', PRECISIONS)
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_autocast_eval_close_to_fp32(family, device, dtype):
    model = FAMILIES[family]().to(device).eval()
    x = torch.randn(*INPUT, device=device)
    with torch.no_grad():
        reference = _outputs(model, x)
        with torch.autocast(device, dtype=dtype):
            outputs = _outputs(model, x)
    assert len(outputs) == len(reference)
    for i, (out, ref) in enumerate(zip(outputs, reference)):
        assert out.shape == ref.shape
        error = float((out.float() - ref).abs().max() / ref.abs().max())
        # bf16 keeps 8 mantissa bits (~0.4% per rounding); the measured errors of these
        # models are ~1% of the output range.
        assert error < 0.05, f'{family}: output {i} differs by {error:.3%} of its range'
