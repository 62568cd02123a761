"""EfficientVMamba backbone + converter: checkpoint keys, official parity, training
behaviour and error messages.

The selective scan runs on the default backend (``MMSSM_SCAN_BACKEND`` picks another).
"""
import copy
import runpy
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import (fixture_case_ids, fixture_cases, keys_files, keys_tsv, load_fixture,
                      output_errors, parse_keys_tsv, random_state_dict_from_tsv)

import mmssm.models  # noqa: F401  (registers the backbones)
from mmssm.converters import (convert_official, from_official, get_converter,
                              load_backbone_weights)
from mmssm.models.backbones.efficient_vmamba import EfficientVMamba

FAMILY = 'efficientvmamba'
ARCHS = ('tiny', 'small', 'base')
# Parameter counts of the official backbone wrapper (4 out-norms), spec section 1.8.
SPEC_PARAMS = {'tiny': 6_109_332, 'small': 10_761_584, 'base': 32_949_480}
SMALL_ARCH = dict(dims=8, depths=(1, 1, 1, 1))

def small_model(**kwargs):
    kwargs.setdefault('arch', SMALL_ARCH)
    kwargs.setdefault('drop_path_rate', 0.0)
    return EfficientVMamba(**kwargs)


# --- (a) official checkpoint keys -> strict load ------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_official_keys_convert_and_load_strict(arch):
    official = random_state_dict_from_tsv(keys_tsv(f'efficientvmamba_{arch}'), seed=1)
    converted = convert_official('efficientvmamba', official)
    with torch.device('meta'):  # built without allocating; the load assigns real tensors
        model = EfficientVMamba(arch)
    own = model.state_dict()
    assert sorted(converted) == sorted(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    model.load_state_dict(converted, strict=True, assign=True)
    assert not any(t.is_meta for t in model.state_dict().values())
    # The flat official conv-stage indices land on the readable names.
    depth2 = model.depths[2]
    torch.testing.assert_close(model.layers[2].blocks[0].conv_pw[0].weight,
                               official['layers.2.1.conv_pw.0.weight'], rtol=0, atol=0)
    torch.testing.assert_close(model.layers[2].blocks[depth2 - 1].se.conv_expand.bias,
                               official[f'layers.2.{depth2}.se.conv_expand.bias'], rtol=0,
                               atol=0)
    torch.testing.assert_close(model.layers[2].downsample.reduction.weight,
                               official[f'layers.2.{depth2 + 2}.reduction.weight'], rtol=0,
                               atol=0)
    torch.testing.assert_close(model.layers[3].blocks[1].conv_pw2[1].running_var,
                               official['layers.3.2.conv_pw2.1.running_var'], rtol=0, atol=0)


def test_official_keys_nested_checkpoints():
    official = random_state_dict_from_tsv(keys_tsv('efficientvmamba_tiny'), seed=2)
    backbone = {k: v for k, v in official.items() if not k.startswith('outnorm')}
    classifier = {'classifier.norm.weight': torch.ones(384), 'classifier.norm.bias':
                  torch.zeros(384), 'classifier.head.weight': torch.zeros(1000, 384),
                  'classifier.head.bias': torch.zeros(1000)}
    reference = convert_official('efficientvmamba', official)
    with_outnorms = EfficientVMamba('tiny')
    with pytest.raises(ValueError, match='at least one output'):
        EfficientVMamba('tiny', out_indices=())  # the official channels-last mode
    variants = {
        'model': {'model': {**backbone, **classifier}, 'epoch': 300},
        'state_dict+module.module.': {'state_dict': {'module.module.' + k: v
                                                     for k, v in backbone.items()}},
        'module.': {'module.' + k: v for k, v in {**backbone, **classifier}.items()},
        'detector': {'state_dict': {**{'backbone.' + k: v for k, v in official.items()},
                                    'neck.lateral_convs.0.conv.weight': torch.zeros(1)},
                     'meta': {'epoch': 12}},
    }
    for name, checkpoint in variants.items():
        converted = convert_official('efficientvmamba', checkpoint)
        expected = reference if name == 'detector' else {
            k: v for k, v in reference.items() if not k.startswith('outnorm')}
        assert sorted(converted) == sorted(expected), name
        for key in expected:
            assert converted[key] is expected[key] or torch.equal(converted[key],
                                                                  expected[key]), key
        result = with_outnorms.load_state_dict(converted, strict=name == 'detector')
        # classification checkpoints hold no out-norms (official Backbone_VSSM adds them)
        assert sorted(result.missing_keys) == ([] if name == 'detector' else sorted(
            k for k in reference if k.startswith('outnorm')))
        assert not result.unexpected_keys


def test_converter_is_idempotent_on_mmssm_state_dicts():
    model = small_model(arch=dict(dims=8, depths=(1, 1, 2, 1), downsample_version='v2',
                                  mlp_ratio=2.0))
    own = model.state_dict()
    again = get_converter('efficientvmamba').convert(own)
    assert list(again) == list(own)
    assert get_converter('efficientvmamba').signature(own)


def test_official_v2_downsample_and_mlp_key_names():
    """Keys of the non-default official options follow the official module layout:
    'v2' downsample = Sequential(permute, conv, permute, LayerNorm) and the FFN is
    norm2 + mlp.fc1/fc2."""
    config = dict(dims=8, depths=(1, 1, 2, 1), downsample_version='v2', mlp_ratio=2.0,
                  out_indices=(1, 3))
    model = from_official('efficientvmamba', config)
    own = model.state_dict()
    assert own['layers.0.downsample.1.weight'].shape == (16, 8, 2, 2)
    assert own['layers.0.downsample.3.weight'].shape == (16, )
    assert own['layers.0.blocks.0.mlp.fc1.weight'].shape == (16, 8)
    assert 'layers.1.blocks.0.norm2.weight' in own
    assert sorted(k for k in own if k.startswith('outnorm')) == [
        'outnorm1.bias', 'outnorm1.weight', 'outnorm3.bias', 'outnorm3.weight']
    # Official flat names of the stage-2 blocks / 'v2' downsample.
    official = OrderedDict()
    for key, value in own.items():
        if key.startswith('layers.2.blocks.'):
            index, tail = key[len('layers.2.blocks.'):].split('.', 1)
            key = f'layers.2.{int(index) + 1}.{tail}'
        elif key.startswith('layers.2.downsample.'):
            key = 'layers.2.4.' + key[len('layers.2.downsample.'):]
        official[key] = value
    converted = convert_official('efficientvmamba', official)
    assert list(converted) == list(own)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 37, 45))
    # 'v2' downsample floors odd sizes: 9x11 -> 4x5 -> 2x2 -> 1x1.
    assert [tuple(o.shape) for o in outs] == [(1, 16, 4, 5), (1, 64, 1, 1)]


def test_converter_rejects_inconsistent_conv_stage_layout():
    official = OrderedDict({
        'layers.2.1.conv_pw.0.weight': torch.zeros(1),
        'layers.2.3.conv_pw.0.weight': torch.zeros(1),
    })
    with pytest.raises(ValueError, match='layers.2'):
        get_converter('efficientvmamba').convert(official)


# --- (b) parity with the official model -------------------------------------------
@pytest.fixture(scope='module')
def cases():
    return fixture_cases(load_fixture(FAMILY))


@pytest.mark.parametrize('case_index', fixture_case_ids(FAMILY))
def test_fixture_parity(cases, case_index):
    config, state_dict, case = cases[case_index]
    model = from_official(FAMILY, config, state_dict)
    assert not model.training
    with torch.no_grad():
        outputs = model(case['input'])
    expected = case['outputs']
    assert isinstance(outputs, (tuple, list)) and len(outputs) == len(expected)
    errors = output_errors(outputs, expected)
    print(f'\nefficientvmamba fixture case {case_index} input {tuple(case["input"].shape)}: '
          + ', '.join(f'out{i} abs {e["max_abs"]:.2e} rel {e["max_rel"]:.2e}'
                      for i, e in enumerate(errors)))
    for i, (out, ref) in enumerate(zip(outputs, expected)):
        assert out.shape == ref.shape and out.dtype == ref.dtype
        assert out.is_contiguous()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f'case {case_index} output {i}: {m}')
    # Tighter, against the float64 reference (catches e.g. a LayerNorm eps 1e-6
    # instead of 1e-5, which moves outputs by ~9e-5).
    for i, (out, ref) in enumerate(zip(outputs, case.get('outputs_fp64', ()))):
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=2e-5,
                                   msg=lambda m: f'case {case_index} fp64 output {i}: {m}')


@pytest.mark.parametrize('case_index', fixture_case_ids(FAMILY))
def test_fixture_parity_float64(cases, case_index):
    """In float64 the rounding noise vanishes and any functional difference shows
    (the official code cannot run in float64; its fp64 reference exists in the fixture)."""
    config, state_dict, case = cases[case_index]
    if 'outputs_fp64' not in case:
        pytest.skip('case has no float64 reference')
    model = from_official(FAMILY, config, state_dict).double()
    with torch.no_grad():
        outputs = model(case['input'].double())
    for i, (out, ref) in enumerate(zip(outputs, case['outputs_fp64'])):
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6,
                                   msg=lambda m: f'case {case_index} output {i}: {m}')


# --- (c) parameter counts ---------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_count(arch):
    with torch.device('meta'):
        model = EfficientVMamba(arch)
    assert sum(p.numel() for p in model.parameters()) == SPEC_PARAMS[arch]


def test_presets_follow_released_checkpoints():
    # S is the width-64 model (the repo's yaml/paper say 96, the checkpoint is 64).
    with torch.device('meta'):
        small = EfficientVMamba('small')
        base = EfficientVMamba('base')
    assert small.dims == (64, 128, 256, 512) and small.depths == (2, 2, 4, 2)
    assert base.dims == (96, 192, 384, 768) and base.depths == (2, 2, 9, 2)
    assert len(base.layers[2].blocks) == 9
    assert base.layers[0].blocks[0].op.dt_rank == 6
    assert base.layers[1].blocks[0].se.global_reduce.out_features == 24
    assert base.layers[2].blocks[0].se.conv_reduce.out_channels == 192


# --- (d) training behaviour -------------------------------------------------------
def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = small_model().train()
    outs = model(torch.randn(2, 3, 24, 36))
    sum((o**2).mean() for o in outs).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert model.layers[0].blocks[0].op.x_proj_weight.grad.abs().sum() > 0
    assert model.layers[1].blocks[0].op.A_logs.grad.abs().sum() > 0


def test_output_layout_any_size():
    model = small_model(out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 45, 71))  # 11x17 after the stem: odd everywhere
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [(1, 8, 11, 17), (1, 16, 6, 9), (1, 32, 3, 5),
                                              (1, 64, 2, 3)]
    subset = small_model(out_indices=(3, 1)).eval()
    subset.load_state_dict({k: v for k, v in model.state_dict().items()
                            if not k.startswith(('outnorm0', 'outnorm2'))})
    with torch.no_grad():
        sub_outs = subset(torch.randn(1, 3, 45, 71, generator=torch.Generator().manual_seed(0)))
        full = model(torch.randn(1, 3, 45, 71, generator=torch.Generator().manual_seed(0)))
    assert len(sub_outs) == 2  # in stage order, like the official wrapper
    torch.testing.assert_close(sub_outs[0], full[1])
    torch.testing.assert_close(sub_outs[1], full[3])
    # The official wrapper's out_indices=() (the last map channels-last) breaks the
    # backbone contract (a tuple of maps): refused.
    with pytest.raises(ValueError, match='at least one output'):
        small_model(out_indices=())


def test_frozen_stages():
    model = small_model(frozen_stages=2)  # the stem and the first two stages
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.outnorm0,
              model.outnorm1]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    for module in (model.layers[2], model.layers[3], model.outnorm2):
        assert all(p.requires_grad for p in module.parameters())
        assert all(m.training for m in module.modules())
    outs = model(torch.randn(2, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    assert model.layers[0].blocks[0].op.A_logs.grad is None
    assert model.layers[2].blocks[0].conv_pw[0].weight.grad is not None
    with pytest.raises(ValueError, match='frozen_stages'):
        small_model(frozen_stages=5)


def test_norm_eval_keeps_batchnorm_statistics():
    model = small_model(norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 2 + 3 + 3  # two conv branches, two inverted residuals
    assert all(not bn.training for bn in bns)
    assert model.training and model.layers[0].blocks[0].op.training
    before = copy.deepcopy([bn.running_mean for bn in bns])
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, bns))
    plain = small_model().train()
    assert all(m.training for m in plain.modules() if isinstance(m, nn.BatchNorm2d))


def test_with_cp_matches_plain_forward_and_grads():
    torch.manual_seed(0)
    plain = small_model(norm_eval=True).train()
    cp_model = small_model(norm_eval=True, with_cp=True).train()
    cp_model.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 24, 32)
    grads = []
    for model in (plain, cp_model):
        outs = model(x)
        sum(o.square().mean() for o in outs).backward()
        grads.append(model.layers[0].blocks[0].op.dt_projs_weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_drop_path_rates():
    model = EfficientVMamba(dict(dims=8, depths=(2, 1, 2, 1)), drop_path_rate=0.25)
    rates = [model.layers[0].blocks[0].drop_path.drop_prob,
             model.layers[1].blocks[0].drop_path.drop_prob,
             model.layers[2].blocks[1].drop_path.drop_prob,
             model.layers[3].blocks[0].drop_path.drop_prob]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.25])
    assert EfficientVMamba('tiny').layers[3].blocks[1].drop_path.drop_prob == pytest.approx(0.2)


@pytest.mark.slow
@pytest.mark.parametrize('size', [(512, 512), (800, 1333)])
def test_output_shapes_detection_sizes(size):
    model = EfficientVMamba(dict(dims=16, depths=(1, 1, 1, 1))).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    h, w = size[0] // 4, size[1] // 4
    expected = []
    for i in range(4):
        expected.append((1, 16 * 2**i, h, w))
        h, w = -(-h // 2), -(-w // 2)
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


# --- pretrained loading / CLI -----------------------------------------------------
def _official_layout(model):
    """Our state dict written with the official key names (flat conv stages)."""
    out = OrderedDict()
    for key, value in model.state_dict().items():
        parts = key.split('.')
        if parts[0] == 'layers' and int(parts[1]) >= 2:
            stage = model.layers[int(parts[1])]
            if parts[2] == 'blocks':
                parts = parts[:2] + [str(int(parts[3]) + 1)] + parts[4:]
            else:
                parts = parts[:2] + [str(len(stage.blocks) + 2)] + parts[3:]
        out['.'.join(parts)] = value
    return out


def test_init_cfg_pretrained_official_checkpoint(tmp_path):
    source = small_model()
    with torch.no_grad():
        for param in source.parameters():
            param.normal_()
    path = tmp_path / 'official.ckpt'
    torch.save({'state_dict': _official_layout(source)}, path)
    model = small_model(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # An mmdet/mmseg checkpoint trained with mmssm (our names under 'backbone.').
    detector = tmp_path / 'detector.pth'
    torch.save({'state_dict': {**{'backbone.' + k: v for k, v in source.state_dict().items()},
                               'neck.fpn_convs.0.conv.weight': torch.zeros(2)}}, detector)
    model = small_model(init_cfg=dict(type='Pretrained', checkpoint=str(detector)))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_cli_converts_official_checkpoint(tmp_path, monkeypatch):
    source = small_model()
    src, dst = tmp_path / 'official.ckpt', tmp_path / 'converted.pth'
    torch.save({'model': _official_layout(source)}, src)
    script = Path(__file__).resolve().parents[2] / 'tools' / 'model_converters' / \
        'efficientvmamba_to_mmssm.py'
    monkeypatch.setattr(sys, 'argv', [str(script), str(src), str(dst)])
    runpy.run_path(str(script), run_name='__main__')
    converted = torch.load(dst, weights_only=True)['state_dict']
    model = small_model()
    model.load_state_dict(converted, strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(converted[key], value), key


# --- official config kwargs -------------------------------------------------------
def test_kwargs_from_official_effective_and_ignored():
    to_ours = get_converter('efficientvmamba').kwargs_from_official
    base_cfg = dict(dims=48, depths=(2, 2, 9, 2), out_indices=(0, 1, 2, 3), ssm_ratio=2.0,
                    mlp_ratio=0.0, downsample_version='v1', drop_path_rate=0.2)
    ours = to_ours(base_cfg)
    assert ours['arch']['dims'] == 48 and ours['arch']['depths'] == [2, 2, 9, 2]
    assert ours['drop_path_rate'] == 0.2 and ours['arch']['downsample_version'] == 'v1'
    # Arguments the official model accepts without effect (incl. the Swin leftovers of
    # the official mmdet configs) change nothing.
    noisy = dict(base_cfg, ssm_d_state=1, ssm_dt_rank=3, d_state=4, dt_rank=2,
                 patchembed_version='v2', window_size=7, forward_type='v0', ssm_conv=5,
                 embed_dims=96, num_heads=[3, 6, 12, 24], qkv_bias=True, qk_scale=None,
                 drop_rate=0.3, attn_drop_rate=0.3, with_cp=True, convert_weights=True,
                 init_cfg=dict(type='Pretrained', checkpoint='swin.pth'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert to_ours(noisy) == ours
    with pytest.warns(UserWarning, match='unknown keys'):
        assert to_ours(dict(base_cfg, not_an_option=1)) == ours
    # Official defaults when absent: dims 96 list, depths 2-2-9-2, mlp 4.0, 'v2'.
    defaults = to_ours({})
    assert defaults['arch']['dims'] == [96, 192, 384, 768]
    assert defaults['arch']['mlp_ratio'] == 4.0
    assert defaults['arch']['downsample_version'] == 'v2'
    assert defaults['drop_path_rate'] == 0.1
    # Any downsample_version except 'v2' is PatchMerging in the official code.
    assert to_ours(dict(base_cfg, downsample_version='v3'))['arch']['downsample_version'] == 'v1'
    assert to_ours(dict(base_cfg, use_checkpoint=True))['with_cp'] is True
    pretrained = to_ours(dict(base_cfg, pretrained='ckpts/efficient_vmamba_tiny.ckpt'))
    assert pretrained['init_cfg'] == dict(type='Pretrained',
                                          checkpoint='ckpts/efficient_vmamba_tiny.ckpt',
                                          drop_classifier=True, allow_missing=['outnorm*'])
    # dims lists longer than depths: the official model reads only the first entries.
    assert to_ours(dict(base_cfg, dims=[8, 16, 32, 64, 128]))['arch']['dims'] == [8, 16, 32, 64]


def test_kwargs_from_official_unsupported_options():
    to_ours = get_converter('efficientvmamba').kwargs_from_official
    with pytest.raises(NotImplementedError, match='ssm_ratio'):
        to_ours(dict(ssm_ratio=3.0))
    with pytest.raises(NotImplementedError, match='step_size'):
        to_ours(dict(step_size=3))
    with pytest.raises(NotImplementedError, match='norm_layer'):
        to_ours(dict(norm_layer=nn.BatchNorm2d))
    with pytest.raises(ValueError, match='out_indices'):
        to_ours(dict(depths=(2, 2, 2, 2), out_indices=(4, )))
    with pytest.raises(ValueError, match='MM_VSSM'):
        to_ours(dict(type='MM_VSSM'))


# --- (e) bad input ----------------------------------------------------------------
def test_bad_input_shapes():
    model = small_model().eval()
    with pytest.raises(ValueError, match=r'expected input \(B, 3, H, W\).*got \(1, 4, 32, 32\)'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='H, W >= 4'):
        model(torch.randn(1, 3, 2, 32))
    with pytest.raises(ValueError, match='expected input'):
        model(torch.randn(3, 32, 32))


def test_bad_arch():
    with pytest.raises(ValueError, match='unknown arch .*tiny'):
        EfficientVMamba('huge')
    with pytest.raises(ValueError, match='missing keys'):
        EfficientVMamba(dict(dims=8))
    with pytest.raises(ValueError, match='unknown keys'):
        EfficientVMamba(dict(dims=8, depths=(1, 1, 1, 1), d_state=4))
    with pytest.raises(ValueError, match='dims'):
        EfficientVMamba(dict(dims=(8, 16), depths=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match='ssm_ratio'):
        EfficientVMamba(dict(dims=8, depths=(1, 1, 1, 1), ssm_ratio=4.0))
    with pytest.raises(ValueError, match='downsample_version'):
        EfficientVMamba(dict(dims=8, depths=(1, 1, 1, 1), downsample_version='v3'))
    with pytest.raises(ValueError, match='out_indices'):
        EfficientVMamba('tiny', out_indices=(4, ))
    with pytest.raises(TypeError):
        EfficientVMamba('tiny', use_checkpoint=True)  # strict signature


def test_signature_and_other_families_rejected(tmp_path):
    sig = get_converter('efficientvmamba').signature
    for path in keys_files('efficientvmamba_*.tsv'):
        assert sig(parse_keys_tsv(path)), path.name
    others = [p for p in keys_files(extra=True) if not p.name.startswith('efficientvmamba')]
    assert others
    for path in others:
        assert not sig(parse_keys_tsv(path)), path.name
    vmamba = random_state_dict_from_tsv(keys_tsv('vmamba_tiny_s1l8'))
    with pytest.raises(ValueError, match='efficientvmamba'):
        convert_official('efficientvmamba', vmamba)
    path = tmp_path / 'vmamba.pth'
    torch.save({'model': vmamba}, path)
    model = EfficientVMamba('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises((ValueError, RuntimeError), match='efficientvmamba|EfficientVMamba'):
        model.init_weights()
    with pytest.raises((ValueError, RuntimeError)):
        load_backbone_weights(model, 'efficientvmamba', {'model': vmamba})
