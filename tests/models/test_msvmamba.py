"""MSVMamba backbone + converter: official keys, fixture parity, sizes, training, errors.

The selective scan runs on the default backend (``MMSSM_SCAN_BACKEND`` picks another).
"""
import math
import os
import re
import runpy
import sys
import warnings
from collections import OrderedDict

import pytest
import torch

import mmssm.models  # noqa: F401  (registers the backbones)
from mmssm.converters import (convert_official, from_official, get_converter,
                              load_state_dict_checked)
from mmssm.converters.msvmamba import kwargs_from_official
from mmssm.models.backbones.msvmamba import MSVMamba

from conftest import (fixture_case_ids, fixture_cases, keys_tsv, load_fixture, output_errors,
                      random_state_dict_from_tsv)

ARCHS = ('nano', 'micro', 'tiny')
# Backbone parameters (MM_VSSM with four outnorms, no head), spec section 2.
SPEC_PARAMS = {'nano': 6_479_808, 'micro': 11_367_168, 'tiny': 32_278_656}
# A reduced width/depth for tests that run the model.
SMALL = dict(dims=8, depths=(1, 2, 1, 1))
TINY_DEPTHS = dict(dims=4, depths=(1, 1, 1, 1))
# Loading into a 'meta' model checks names and shapes; torch notes that it copies nothing.
meta_load = pytest.mark.filterwarnings('ignore:for .*copying from a non-meta parameter')


def meta_model(**kwargs):
    with torch.device('meta'):
        return MSVMamba(**kwargs)


def expected_shapes(dims, height, width):
    """Official sizes: floor(H/4) after the stem, then ceil halvings."""
    shapes, h, w = [], height // 4, width // 4
    for dim in dims:
        shapes.append((dim, h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return shapes


def legacy_official_names(state_dict):
    """Rename to the pre-release names the official loader still accepts."""
    out = OrderedDict()
    for key, value in state_dict.items():
        key = key.replace('patch_embed.0.', 'patch_embed.proj.')
        key = re.sub(r'(blocks\.\d+\.)norm\.', r'\1ln_1.', key)
        key = re.sub(r'(blocks\.\d+\.)op\.', r'\1self_attention.', key)
        out[key] = value
    return out


# -- (a) official key lists -----------------------------------------------------------
@meta_load
@pytest.mark.parametrize('arch', ARCHS)
def test_official_keys_convert_and_load_strict(arch):
    official = random_state_dict_from_tsv(keys_tsv(f'msvmamba_{arch}'), seed=1)
    model = meta_model(arch=arch)
    converted = convert_official('msvmamba', official)
    assert list(model.state_dict()) == list(converted)  # same order
    # the official names but the SE's (Linear fc.0/fc.2 -> 1x1 conv_reduce/conv_expand)
    renamed = [(o, c) for o, c in zip(official, converted) if o != c]
    assert renamed and all(re.search(r'\.se\.fc\.[02]\.weight$', o) for o, _ in renamed)
    assert all(c == re.sub(r'fc\.0', 'conv_reduce', re.sub(r'fc\.2', 'conv_expand', o))
               for o, c in renamed)
    load_state_dict_checked(model, converted, strict=True)


def test_official_keys_values_land_in_the_model():
    official = random_state_dict_from_tsv(keys_tsv('msvmamba_nano'), seed=2)
    model = MSVMamba('nano')
    load_state_dict_checked(model, convert_official('msvmamba', official), strict=True)
    own = model.state_dict()
    for key, value in official.items():
        se = re.match(r'^(.*\.se\.)fc\.([02])\.weight$', key)
        if se:  # the SE Linear weight is the 1x1 conv's
            name = se.group(1) + ('conv_reduce' if se.group(2) == '0' else 'conv_expand')
            assert torch.equal(own[name + '.weight'][:, :, 0, 0], value), key
        else:
            assert torch.equal(own[key], value), key


def _wrappings(official):
    head = {'classifier.norm.weight': torch.ones(8), 'classifier.norm.bias': torch.zeros(8),
            'classifier.head.weight': torch.zeros(10, 8), 'classifier.head.bias': torch.zeros(10)}
    no_outnorm = OrderedDict((k, v) for k, v in official.items()
                             if not k.startswith('outnorm'))
    return {
        'model': {'model': {**official, **head}, 'model_ema': {**official},
                  'config': {'MODEL': {'NAME': 'vssm_nano_ms_e300'}}, 'epoch': 3},
        'state_dict+backbone': {'state_dict': OrderedDict(
            [('backbone.' + k, v) for k, v in official.items()]
            + [('neck.lateral_convs.0.conv.weight', torch.zeros(4, 4, 1, 1))]),
            'meta': {'epoch': 12}},
        'module': OrderedDict(('module.' + k, v) for k, v in official.items()),
        'legacy': {'model': {**legacy_official_names(official),
                             'norm.weight': torch.ones(8), 'head.weight': torch.zeros(10, 8)}},
        'classification (no outnorm)': {'model': {**no_outnorm, **head}},
    }


@meta_load
@pytest.mark.parametrize('wrapping', ['model', 'state_dict+backbone', 'module', 'legacy',
                                      'classification (no outnorm)'])
def test_nested_checkpoints_convert(wrapping):
    official = random_state_dict_from_tsv(keys_tsv('msvmamba_micro'), seed=3)
    converted = convert_official('msvmamba', _wrappings(official)[wrapping])
    expected = convert_official('msvmamba', official)
    if wrapping.startswith('classification'):
        expected = OrderedDict((k, v) for k, v in expected.items()
                               if not k.startswith('outnorm'))
    assert list(converted) == list(expected)
    # no copies: renamed tensors are the official ones, the SE's are views of them
    assert all(converted[k].data_ptr() == expected[k].data_ptr()
               and converted[k].shape == expected[k].shape for k in expected)
    model = meta_model(arch='micro')
    report = load_state_dict_checked(model, converted, strict=False)
    assert report['unexpected'] == []
    assert all(k.startswith('outnorm') for k in report['missing'])


def test_pretrained_init_cfg_loads_official_and_converted_files(tmp_path):
    ref = MSVMamba(SMALL)
    official = OrderedDict((k, torch.randn_like(v)) for k, v in ref.state_dict().items())
    torch.save({'model': official, 'epoch': 1}, tmp_path / 'official.pth')
    # Our converter CLI (the tools/ wrapper) writes an mmssm checkpoint.
    argv = sys.argv
    try:
        sys.argv = ['msvmamba_to_mmssm.py', str(tmp_path / 'official.pth'),
                    str(tmp_path / 'ours.pth')]
        runpy.run_path(os.path.join(os.path.dirname(__file__), '..', '..', 'tools',
                                    'model_converters', 'msvmamba_to_mmssm.py'),
                       run_name='__main__')
    finally:
        sys.argv = argv
    for name in ('official.pth', 'ours.pth'):
        model = MSVMamba(SMALL, init_cfg=dict(type='Pretrained',
                                              checkpoint=str(tmp_path / name)))
        model.init_weights()
        own = model.state_dict()
        assert all(torch.equal(own[k], v) for k, v in official.items()), name


# -- (b) parity with the official model -------------------------------------------------
@pytest.mark.parametrize('case_id', fixture_case_ids('msvmamba'))
def test_fixture_parity(case_id):
    config, state_dict, case = fixture_cases(load_fixture('msvmamba'))[case_id]
    model = from_official('msvmamba', config, state_dict)
    with torch.no_grad():
        outs = model(case['input'])
    assert isinstance(outs, tuple)
    errors = output_errors(outs, case['outputs'])
    for out, ref in zip(outs, case['outputs']):
        assert out.dtype == ref.dtype
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    print(f'\nmsvmamba fixture case {case_id} {tuple(case["input"].shape)}: '
          f'max abs {max(e["max_abs"] for e in errors):.3g}, '
          f'max rel {max(e["max_rel"] for e in errors):.3g}')


@pytest.mark.parametrize('case_id', fixture_case_ids('msvmamba'))
def test_fixture_parity_float64(case_id):
    config, state_dict, case = fixture_cases(load_fixture('msvmamba'))[case_id]
    if 'outputs_fp64' not in case:
        pytest.skip('case has no float64 reference')
    model = from_official('msvmamba', config, state_dict).double()
    with torch.no_grad():
        outs = model(case['input'].double())
    for out, ref in zip(outs, case['outputs_fp64']):
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_routed_kernel_path_equals_the_gathered_path(monkeypatch):
    """Float32 CPU inference and training scan both routes with the routed kernels
    (unmerged, then out_norm, then the merge); the gathered path (other devices,
    autocast, export) computes the same function on the official fixture, and the same
    gradients."""
    from mmssm.models.backbones.msvmamba import MultiScaleSS2D
    from mmssm.ops.kernels import backend_available
    if not backend_available('cpu'):
        pytest.skip('mmssm._C is not built')
    config, state_dict, case = fixture_cases(load_fixture('msvmamba'))[0]
    model = from_official('msvmamba', config, state_dict).eval()
    calls = []
    real = MultiScaleSS2D.scan_map
    monkeypatch.setattr(MultiScaleSS2D, 'scan_map',
                        lambda self, *a, **k: calls.append(k.get('merge', a[-1])) or
                        real(self, *a, **k))
    with torch.no_grad():
        routed = model(case['input'])
    mixers = [m for m in model.modules() if isinstance(m, MultiScaleSS2D)]
    assert len(calls) == 2 * len(mixers) and not any(calls)  # two routes, unmerged
    real_applies = MultiScaleSS2D.routed_kernel_applies
    monkeypatch.setattr(MultiScaleSS2D, 'routed_kernel_applies', lambda self, x: False)
    with torch.no_grad():
        gathered = model(case['input'])
    for out, ref in zip(routed, gathered):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    def gradients():
        model.zero_grad()
        image = case['input'].clone().requires_grad_()
        outs = model(image)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        return [image.grad] + [p.grad.clone() for p in model.parameters()
                               if p.grad is not None]

    model.train()
    for module in model.modules():  # (no dropout / drop path in the comparison)
        module.training = isinstance(module, MultiScaleSS2D)
    gathered = gradients()
    monkeypatch.setattr(MultiScaleSS2D, 'routed_kernel_applies', real_applies)
    calls.clear()
    routed = gradients()
    assert len(calls) == 2 * len(mixers)
    assert len(routed) == len(gathered)
    for got, want in zip(routed, gathered):
        scale = want.abs().max().item() + 1e-3
        torch.testing.assert_close(got / scale, want / scale, rtol=1e-4, atol=2e-5)


def test_inference_in_place_keeps_the_block_input_and_the_function():
    """Inference (no graph) overwrites each block's own intermediate maps (the gates, the
    sums, the residuals): the block input stays as it was, and the output equals the
    graph-building path's."""
    from mmssm.models.backbones.msvmamba import MSVSSBlock
    config, state_dict, case = fixture_cases(load_fixture('msvmamba'))[0]
    model = from_official('msvmamba', config, state_dict).eval()
    block = next(m for m in model.modules() if isinstance(m, MSVSSBlock))
    x = torch.randn(2, 7, 6, block.norm.normalized_shape[0])
    x_before = x.clone()
    with torch.no_grad():
        inference = block(x)
    assert torch.equal(x, x_before)
    graph = block(x.clone().requires_grad_())
    torch.testing.assert_close(inference, graph.detach(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        image = case['input'].clone()
        model(image)
    assert torch.equal(image, case['input'])


def test_fixture_config_maps_onto_explicit_arch():
    config = load_fixture('msvmamba')['config']
    kwargs = kwargs_from_official(config)
    assert kwargs['arch'] == dict(dims=[16, 32, 64, 128], depths=[1, 2, 2, 1], d_state=1,
                                  ssm_ratio=2.0, dt_rank='auto', use_se=True,
                                  conv_bias=True)
    assert kwargs['drop_path_rate'] == config['drop_path_rate']
    assert kwargs['ffn_drop_rate'] == 0.0 and kwargs['out_indices'] == (0, 1, 2, 3)


# -- (c) parameter counts -----------------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_count_matches_spec(arch):
    model = meta_model(arch=arch)
    assert sum(p.numel() for p in model.parameters()) == SPEC_PARAMS[arch]


def test_presets_and_official_variant_configs_agree():
    common = dict(ssm_d_state=1, ssm_dt_rank='auto', ssm_ratio=2.0, mlp_ratio=0.0,
                  downsample_version='v1', patchembed_version='v1',
                  sscore_type='multiscale_4scan_12', convFFN=True, add_se=True,
                  ms_stage=[0, 1, 2, 3], ms_split=[1, 3], ffn_dropout=0.0)
    variants = {'nano': (48, [1, 2, 5, 2]), 'micro': (64, [1, 2, 5, 2]),
                'tiny': (96, [1, 2, 9, 2])}
    for arch, (dims, depths) in variants.items():
        # The merged official detection config, Swin leftovers included.
        swin = dict(embed_dims=96, num_heads=[3, 6, 12, 24], window_size=7, qkv_bias=True,
                    qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.2,
                    patch_norm=True, with_cp=False, convert_weights=True,
                    init_cfg=dict(type='Pretrained', checkpoint='swin.pth'))
        config = dict(swin, out_indices=(0, 1, 2, 3), pretrained=None, dims=dims,
                      depths=depths, **common)
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            kwargs = kwargs_from_official(config)
        assert 'init_cfg' not in kwargs and kwargs['with_cp'] is False
        with torch.device('meta'):
            from_cfg = MSVMamba(**kwargs)
        preset = meta_model(arch=arch)
        assert {k: v.shape for k, v in from_cfg.state_dict().items()} == \
            {k: v.shape for k, v in preset.state_dict().items()}
    assert meta_model(arch='tiny').layers[0].blocks[0].drop_path.drop_prob == 0.0
    assert meta_model(arch='tiny').layers[3].blocks[1].drop_path.drop_prob == \
        pytest.approx(0.2)  # default: the value the official det configs really use


def test_registry_builds_by_scoped_name():
    from mmengine.registry import MODELS as ROOT
    with torch.device('meta'):
        model = ROOT.build(dict(type='mmssm.MSVMamba', arch='nano', out_indices=(1, 3)))
    assert isinstance(model, MSVMamba)
    assert [k for k in model.state_dict() if k.startswith('outnorm')] == [
        'outnorm1.weight', 'outnorm1.bias', 'outnorm3.weight', 'outnorm3.bias']


# -- (d) sizes, training, freezing ------------------------------------------------------
@pytest.mark.parametrize('size', [(64, 64), (37, 53), (30, 18)])
def test_output_shapes_any_size(size):
    model = MSVMamba(SMALL).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    expected = expected_shapes([8, 16, 32, 64], *size)
    assert [tuple(o.shape[1:]) for o in outs] == expected
    assert model.output_shapes(*size) == expected
    assert all(o.is_contiguous() for o in outs)


def test_out_indices_subset_and_empty():
    model = MSVMamba(SMALL, out_indices=(2, 0)).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        outs = model(x)
    assert [o.shape[1] for o in outs] == [8, 32]
    # The official wrapper's out_indices=() (the last stage channels-last) breaks the
    # backbone contract (a tuple of maps): refused.
    with pytest.raises(ValueError, match='at least one output'):
        MSVMamba(SMALL, out_indices=())


@pytest.mark.parametrize('size', [(512, 512)])
def test_output_shapes_segmentation_input(size):
    model = MSVMamba(TINY_DEPTHS).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (1, ) + s for s in expected_shapes([4, 8, 16, 32], *size)]


@pytest.mark.slow
def test_output_shapes_detection_input():
    model = MSVMamba(TINY_DEPTHS).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert [tuple(o.shape) for o in outs] == [(1, 4, 200, 333), (1, 8, 100, 167),
                                              (1, 16, 50, 84), (1, 32, 25, 42)]


def _loss(outs):
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = MSVMamba(SMALL, drop_path_rate=0.1).train()
    _loss(model(torch.randn(2, 3, 20, 28))).backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    # Both scan branches learn: slot 0 (low resolution) and slot 1 (full resolution).
    for block in (model.layers[0].blocks[0], model.layers[3].blocks[0]):
        for name in ('x_proj_weight', 'dt_projs_weight', 'dt_projs_bias'):
            grad = getattr(block.op, name).grad
            assert (grad[0].abs().sum() > 0) and (grad[1].abs().sum() > 0), name
        assert block.op.conv2d_b1.weight.grad.abs().sum() > 0
    assert model.patch_embed[0].weight.grad.abs().sum() > 0


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = MSVMamba(SMALL, drop_path_rate=0.0).train()
    ckpt = MSVMamba(SMALL, drop_path_rate=0.0, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 16, 16)
    for model in (plain, ckpt):
        _loss(model(x)).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_frozen_stages():
    model = MSVMamba(SMALL, frozen_stages=2)  # the stem and the first two stages
    model.train()
    frozen_prefixes = ('patch_embed.', 'layers.0.', 'layers.1.', 'outnorm0.', 'outnorm1.')
    for name, p in model.named_parameters():
        assert p.requires_grad != name.startswith(frozen_prefixes), name
    assert not model.layers[1].training and model.layers[2].training
    assert not model.patch_embed.training
    _loss(model(torch.randn(1, 3, 16, 16))).backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == name.startswith(frozen_prefixes), name


# -- (e) bad input ------------------------------------------------------------------------
def test_wrong_channel_count():
    model = MSVMamba(SMALL).eval()
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\).*\(1, 4, 32, 32\)'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='smaller than'):
        model(torch.randn(1, 3, 2, 32))


def test_bad_arch_and_arguments():
    with pytest.raises(ValueError, match='unknown arch.*micro, nano, tiny'):
        MSVMamba('huge')
    with pytest.raises(ValueError, match='missing keys'):
        MSVMamba(dict(dims=8))
    with pytest.raises(ValueError, match='unknown keys'):
        MSVMamba(dict(dims=8, depths=(1, 1), window=7))
    with pytest.raises(ValueError, match='one width per stage'):
        MSVMamba(dict(dims=(8, 16, 32), depths=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match='out_indices'):
        MSVMamba(SMALL, out_indices=(4, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        MSVMamba(SMALL, frozen_stages=5)
    with pytest.raises(TypeError):
        MSVMamba(SMALL, embed_dims=96)  # strict signature: no **kwargs


@pytest.mark.parametrize('other', ['vmamba_v0_tiny', 'vmamba_tiny_s1l8',
                                   'efficientvmamba_tiny', 'mobilemamba_t2', 'vim_tiny'])
def test_other_family_checkpoint_is_rejected(other):
    state_dict = random_state_dict_from_tsv(keys_tsv(other))
    assert not get_converter('msvmamba').signature(state_dict)
    with pytest.raises(ValueError, match='msvmamba'):
        convert_official('msvmamba', {'model': state_dict})


def test_msvmamba_v3_checkpoint_is_rejected():
    state_dict = random_state_dict_from_tsv(keys_tsv('extra/msvmamba_v3_tiny'))
    assert get_converter('msvmamba').signature(state_dict)
    with pytest.raises(NotImplementedError, match='MSVMambav3'):
        convert_official('msvmamba', {'model_ema': state_dict})


@meta_load
def test_wrong_variant_checkpoint_is_a_shape_error():
    nano = convert_official('msvmamba', random_state_dict_from_tsv(keys_tsv('msvmamba_nano')))
    with pytest.raises(RuntimeError, match='mis-shaped'):
        load_state_dict_checked(meta_model(arch='micro'), nano)


FIXTURE_LIKE = dict(dims=16, depths=(1, 2, 2, 1), ssm_d_state=1, ssm_dt_rank='auto',
                    ssm_ratio=2.0, mlp_ratio=0.0, downsample_version='v1',
                    patchembed_version='v1', sscore_type='multiscale_4scan_12',
                    convFFN=True, add_se=True, ms_stage=[0, 1, 2, 3], ms_split=[1, 3],
                    ffn_dropout=0.0, drop_path_rate=0.2)


@pytest.mark.parametrize('option,value', [
    ('sscore_type', 'None'), ('ms_split', [1, 2]), ('ms_stage', [1, 2, 3]),
    ('convFFN', False), ('mlp_ratio', 4.0), ('downsample_version', 'v2'),
    ('patchembed_version', 'v2'), ('add_conv', False), ('sep_norm', True),
    ('upsample', 'conv'), ('forward_type', 'v2nozact'), ('ssm_rank_ratio', 1.0),
    ('ssm_act_layer', 'gelu'), ('ssm_conv', 5),
])
def test_unsupported_official_options(option, value):
    with pytest.raises(NotImplementedError, match=option):
        kwargs_from_official({**FIXTURE_LIKE, option: value})


def test_official_defaults_and_supported_variations():
    config = {k: v for k, v in FIXTURE_LIKE.items() if k not in ('ffn_dropout',
                                                                 'drop_path_rate')}
    kwargs = kwargs_from_official({**config, 'add_se': False, 'ssm_d_state': 'auto',
                                   'dims': [16, 24, 40, 48], 'ssm_dt_rank': 3,
                                   'pretrained': 'ckpt.pth', 'use_checkpoint': True})
    assert kwargs['ffn_drop_rate'] == 0.2 and kwargs['drop_path_rate'] == 0.1
    assert kwargs['init_cfg'] == dict(type='Pretrained', checkpoint='ckpt.pth',
                                      drop_classifier=True, allow_missing=['outnorm*'])
    assert kwargs['with_cp'] is True
    with torch.device('meta'):
        model = MSVMamba(**kwargs)
    state = model.state_dict()
    assert not any('.se.' in k for k in state)
    assert state['layers.2.blocks.0.op.x_proj_weight'].shape == (2, 3 + 2 * 7, 80)
    with pytest.warns(UserWarning, match='mystery'):
        kwargs_from_official({**FIXTURE_LIKE, 'mystery': 1})
