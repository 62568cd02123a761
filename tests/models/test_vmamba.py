"""VMamba backbone: official checkpoint names/shapes, numerical parity with the official
MM_VSSM, parameter counts, training behaviour, and bad input.

The selective scan runs on the default backend (``MMSSM_SCAN_BACKEND`` picks another).
"""
import math
import sys
import types
from collections import OrderedDict

import pytest
import torch
from conftest import (fixture_case_ids, fixture_cases, keys_files, keys_tsv, load_fixture,
                      output_errors, parse_keys_tsv, random_state_dict_from_tsv)

import mmssm.models  # noqa: F401  (registers the backbones)
from mmssm.converters import (convert_official, detect_families, from_official, get_converter,
                              load_state_dict_checked)
from mmssm.converters.cli import main as convert_cli
from mmssm.models.backbones.vmamba import VMamba
from mmssm.registry import MODELS

converter = get_converter('vmamba')

# spec §3: #params of the official MM_VSSM backbone incl. outnorm0..3
SPEC_PARAMS = {
    'tiny_s1l8': 29_481_408,
    'tiny_s2l5': 29_938_176,
    'small_s2l15': 49_380_096,
    'base_s2l15': 87_534_592,
    'v0_tiny': 22_125_792,
    'v0_small': 43_649_760,
    'v0_base': 75_230_848,
}
KEY_ARCHS = [p.stem[len('vmamba_'):] for p in keys_files('vmamba_*.tsv')]

# Reduced widths/depths of both generations, for CPU-speed behaviour tests.
SMALL_V2 = dict(depths=[1, 1, 2, 1], dims=8, d_state=1, ssm_ratio=2.0, mlp_ratio=4.0,
                gated=False, conv_bias=False, patch_embed='v2', downsample='v3')
SMALL_V0 = dict(depths=[1, 1, 2, 1], dims=8, d_state=4, ssm_ratio=2.0, mlp_ratio=0.0,
                gated=True, conv_bias=True, patch_embed='v1', downsample='v1')


def official_config(**overrides):
    """A complete official MM_VSSM kwargs dict (the VMamba-T[s1l8] detection config)."""
    config = dict(out_indices=(0, 1, 2, 3), pretrained=None, norm_layer='ln2d', patch_size=4,
                  in_chans=3, depths=[2, 2, 8, 2], dims=96, ssm_d_state=1, ssm_ratio=1.0,
                  ssm_dt_rank='auto', ssm_act_layer='silu', ssm_conv=3, ssm_conv_bias=False,
                  ssm_drop_rate=0.0, ssm_init='v0', forward_type='v05_noz', mlp_ratio=4.0,
                  mlp_act_layer='gelu', mlp_drop_rate=0.0, gmlp=False, drop_path_rate=0.2,
                  patch_norm=True, downsample_version='v3', patchembed_version='v2',
                  use_checkpoint=False, posembed=False, imgsize=224)
    config.update(overrides)
    return config


def expected_sizes(arch, height, width):
    """Feature sizes per stage from the official conv arithmetic."""
    sizes = []
    if arch['patch_embed'] == 'v2':
        h, w = math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)
    else:
        h, w = height // 4, width // 4
    for _ in range(len(arch['depths'])):
        sizes.append((h, w))
        if arch['downsample'] == 'v2':
            h, w = h // 2, w // 2
        else:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def build_meta(**kwargs):
    with torch.device('meta'):
        return VMamba(**kwargs)


# ---------------------------------------------------------------------------------------
# (a) official keys -> our model, strictly


@pytest.mark.parametrize('arch', KEY_ARCHS)
def test_official_keys_convert_and_load_strict(arch):
    official = random_state_dict_from_tsv(keys_tsv(f'vmamba_{arch}'), seed=0)
    assert converter.signature(official)
    converted = convert_official('vmamba', official)
    model = build_meta(arch=arch)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    assert sorted(set(own) - set(got)) == [], 'missing'
    assert sorted(set(got) - set(own)) == [], 'unexpected'
    assert own == got, 'shape mismatch'
    model.load_state_dict(converted, strict=True, assign=True)
    assert converter.signature(model.state_dict())  # our own names are recognised too
    # every official tensor lands in exactly one of our entries, unchanged
    ours = model.state_dict()
    assert len(ours) == len(official)
    storage = {v.data_ptr() for v in ours.values()}
    assert all(v.data_ptr() in storage for v in official.values())


def _legacy_names(state_dict):
    """Rename like the pre-2024 official checkpoints (what VSSM._load_from_state_dict
    undoes): ln_1 / self_attention in blocks, patch_embed.proj/norm, top-level head."""
    out = OrderedDict()
    for key, value in state_dict.items():
        parts = key.split('.')
        if parts[0] == 'layers' and len(parts) > 4 and parts[2] == 'blocks':
            parts[4] = {'norm': 'ln_1', 'op': 'self_attention'}.get(parts[4], parts[4])
        if parts[0] == 'patch_embed' and not any(k.startswith('patch_embed.5.')
                                                 for k in state_dict):
            parts[1] = {'0': 'proj', '2': 'norm'}.get(parts[1], parts[1])
        out['.'.join(parts)] = value
    return out


@pytest.mark.parametrize('arch', ['tiny_s1l8', 'v0_tiny'])
def test_checkpoint_wrappings_and_legacy_names(arch):
    official = random_state_dict_from_tsv(keys_tsv(f'vmamba_{arch}'), seed=1)
    reference = convert_official('vmamba', official)
    width = official['outnorm3.weight'].shape[0]
    classifier = OrderedDict([('classifier.norm.weight', torch.ones(width)),
                              ('classifier.norm.bias', torch.zeros(width)),
                              ('classifier.head.weight', torch.zeros(1000, width)),
                              ('classifier.head.bias', torch.zeros(1000))])
    with_classifier = OrderedDict(official, **classifier)
    legacy = _legacy_names(official)
    legacy.update({'norm.weight': torch.ones(width), 'head.weight': torch.zeros(1000, width)})
    linear2d_as_conv = OrderedDict(
        (k, v[:, :, None, None] if k.endswith(('in_proj.weight', 'out_proj.weight',
                                               'fc1.weight', 'fc2.weight')) else v)
        for k, v in official.items())
    variants = {
        'bare': official,
        'model': {'model': with_classifier, 'epoch': 3, 'max_accuracy': 80.1},
        'model+ema': {'model': official, 'model_ema': {k: torch.zeros(1) for k in official}},
        'state_dict/backbone.': {
            'meta': {'epoch': 12},
            'state_dict': OrderedDict([(f'backbone.{k}', v) for k, v in official.items()]
                                      + [('neck.lateral_convs.0.conv.weight',
                                          torch.zeros(256, 96, 1, 1))])},
        'module.': OrderedDict((f'module.{k}', v) for k, v in with_classifier.items()),
        'legacy': legacy,
        'linear2d-as-conv': linear2d_as_conv,
    }
    for name, contents in variants.items():
        got = convert_official('vmamba', contents)
        assert list(got) == list(reference), name
        for key in reference:  # the very same tensors (or views of them)
            assert got[key].data_ptr() == reference[key].data_ptr(), (name, key)
            assert got[key].shape == reference[key].shape, (name, key)
    assert not any(k.startswith(('classifier', 'norm', 'head')) for k in reference)


@pytest.mark.parametrize('arch', [SMALL_V2, SMALL_V0, dict(SMALL_V2, downsample='v2')],
                         ids=['v2', 'v0', 'v2-downsample-v2'])
def test_mmssm_state_dict_passes_conversion_unchanged(arch):
    own = build_meta(arch=arch).state_dict()
    assert converter.signature(own)
    converted = convert_official('vmamba', {'state_dict': own})
    assert list(converted) == list(own)


# ---------------------------------------------------------------------------------------
# (b) numerical parity with the official MM_VSSM (fixture)


@pytest.mark.parametrize('index', fixture_case_ids('vmamba'))
def test_fixture_parity(index):
    fixture = load_fixture('vmamba')
    config, state_dict, case = fixture_cases(fixture)[index]
    model = from_official('vmamba', config, state_dict)
    assert not model.training
    with torch.no_grad():
        outputs = model(case['input'])
    assert isinstance(outputs, tuple)
    errors = output_errors(outputs, case['outputs'])
    print(f'\nvmamba fixture case {index} input {tuple(case["input"].shape)}: ' + ', '.join(
        f'out{i} max_abs={e["max_abs"]:.2e} max_rel={e["max_rel"]:.2e}'
        for i, e in enumerate(errors)))
    for out, ref in zip(outputs, case['outputs']):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for out, ref in zip(outputs, case.get('outputs_fp64', [])):
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=5e-5)


# ---------------------------------------------------------------------------------------
# (c) parameter counts, official configs -> the same module tree


@pytest.mark.parametrize('arch', sorted(SPEC_PARAMS))
def test_param_count_matches_spec(arch):
    model = build_meta(arch=arch)
    assert sum(p.numel() for p in model.parameters()) == SPEC_PARAMS[arch]
    assert len(model.state_dict()) == len(parse_keys_tsv(keys_tsv(f'vmamba_{arch}')))


@pytest.mark.parametrize('arch,config', [
    ('tiny_s1l8', official_config()),
    ('tiny_s2l5', official_config(depths=[2, 2, 5, 2], ssm_ratio=2.0)),
    ('base_s2l15', official_config(depths=[2, 2, 15, 2], dims=128, ssm_ratio=2.0,
                                   drop_path_rate=0.6)),
    # the v0 detection config: channel-last, default forward_type 'v2', gated, no MLP
    ('v0_tiny', official_config(norm_layer='ln', depths=[2, 2, 9, 2], ssm_d_state=16,
                                ssm_ratio=2.0, ssm_conv_bias=True, forward_type='v2',
                                mlp_ratio=0.0, downsample_version='v1',
                                patchembed_version='v1')),
    # the v0 classification forward type (legacy SS2Dv0, ignores ssm_conv_bias)
    ('v0_small', official_config(norm_layer='ln', depths=[2, 2, 27, 2], ssm_d_state=16,
                                 ssm_ratio=2.0, forward_type='v0', mlp_ratio=0.0,
                                 downsample_version='v1', patchembed_version='v1')),
])
def test_official_config_builds_the_official_tree(arch, config):
    kwargs = converter.kwargs_from_official(config)
    with torch.device('meta'):
        model = MODELS.build(dict(type='VMamba', **kwargs))
    expected = convert_official('vmamba', OrderedDict(
        (k, torch.empty(s, device='meta'))
        for k, s in parse_keys_tsv(keys_tsv(f'vmamba_{arch}')).items()))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in expected.items()}
    assert model.arch['drop_path_rate'] == config['drop_path_rate']


def test_official_config_out_indices_subset_and_list_dims():
    config = official_config(out_indices=(1, 3), dims=[8, 16, 24, 40], depths=[1, 1, 1, 1])
    model = MODELS.build(dict(type='VMamba', **converter.kwargs_from_official(config)))
    assert [k for k in model.state_dict() if k.startswith('outnorm')] == [
        'outnorm1.weight', 'outnorm1.bias', 'outnorm3.weight', 'outnorm3.bias']
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 8), (1, 40, 2, 2)]


@pytest.mark.parametrize('overrides,match', [
    (dict(posembed=True), 'posembed'),
    (dict(gmlp=True), 'gmlp'),
    (dict(norm_layer='bn'), 'norm_layer'),
    (dict(forward_type='v05_noz_oact'), '_oact'),
    (dict(forward_type='v05_onsoftmax'), '_onsoftmax'),
    (dict(forward_type='v052d_noz'), 'v052d'),
    (dict(forward_type='xv1a'), 'xv1a'),
    (dict(forward_type='m0'), 'm0'),
    (dict(forward_type='v0'), 'channel-last'),  # SS2Dv0 with norm_layer 'ln2d'
    (dict(ssm_act_layer='gelu'), 'ssm_act_layer'),
    (dict(ssm_conv=1), 'ssm_conv'),
    (dict(ssm_conv=4), 'ssm_conv'),
    (dict(ssm_init='v1'), 'ssm_init'),
    (dict(out_indices=()), 'out_indices'),
])
def test_kwargs_from_official_rejects_unsupported(overrides, match):
    with pytest.raises(NotImplementedError, match=match):
        converter.kwargs_from_official(official_config(**overrides))


def test_kwargs_from_official_maps_everything():
    kwargs = converter.kwargs_from_official(official_config(
        pretrained='/ckpt/vssm.pth', use_checkpoint=True, in_chans=4, ssm_dt_rank=3,
        drop_path_rate=0.25, forward_type='v2_noz_no32', embed_dims=96, window_size=7))
    assert kwargs['init_cfg'] == dict(type='Pretrained', checkpoint='/ckpt/vssm.pth',
                                      drop_classifier=True, allow_missing=['outnorm*'])
    assert kwargs['with_cp'] is True and kwargs['in_channels'] == 4
    arch = kwargs['arch']
    assert arch['dims'] == [96, 192, 384, 768] and arch['dt_rank'] == 3
    assert arch['drop_path_rate'] == 0.25 and arch['gated'] is False
    assert 'init_cfg' not in converter.kwargs_from_official(official_config(pretrained=''))
    with pytest.raises(ValueError, match='non-negative'):
        converter.kwargs_from_official(official_config(out_indices=(-1, )))


# ---------------------------------------------------------------------------------------
# (d) training behaviour and output shapes


@pytest.mark.parametrize('arch', [SMALL_V2, SMALL_V0], ids=['v2', 'v0'])
def test_backward_reaches_every_parameter(arch):
    torch.manual_seed(0)
    model = VMamba(arch=dict(arch, drop_path_rate=0.3)).train()
    x = torch.randn(2, 3, 37, 53, requires_grad=True)
    outs = model(x)
    assert [tuple(o.shape[2:]) for o in outs] == expected_sizes(arch, 37, 53)
    sum(o.square().mean() for o in outs).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_frozen_stages():
    model = VMamba(arch=SMALL_V2, frozen_stages=2)  # the stem and the first two stages
    model.train()
    frozen = ('patch_embed.', 'layers.0.', 'layers.1.', 'outnorm0.', 'outnorm1.')
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(frozen)), name
    for name, module in model.named_modules():
        if name.startswith(frozen):
            assert not module.training, name
        elif name.startswith(('layers.2', 'layers.3', 'outnorm2')):
            assert module.training, name
    outs = model(torch.randn(1, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    for name, param in model.named_parameters():
        assert (param.grad is None) == name.startswith(frozen), name
    with pytest.raises(ValueError, match='frozen_stages'):
        VMamba(arch=SMALL_V2, frozen_stages=5)


def test_norm_eval_and_checkpointing_keep_the_function():
    torch.manual_seed(0)
    reference = VMamba(arch=dict(SMALL_V2, drop_path_rate=0.0)).eval()
    model = VMamba(arch=dict(SMALL_V2, drop_path_rate=0.0), norm_eval=True, with_cp=True)
    model.load_state_dict(reference.state_dict())
    model.train()
    assert model.training
    x = torch.randn(1, 3, 40, 24)
    outs, ref = model(x.requires_grad_()), reference(x)
    for out, expected in zip(outs, ref):
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    sum(o.sum() for o in outs).backward()
    sum(o.sum() for o in reference(x)).backward()
    for (name, param), ref_param in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(param.grad, ref_param.grad, rtol=1e-4, atol=1e-5,
                                   msg=f'gradient of {name}')


DETECTION_SIZES = [(512, 512), (800, 1333)]


@pytest.mark.parametrize('arch', [SMALL_V2, SMALL_V0], ids=['v2', 'v0'])
@pytest.mark.parametrize('size', DETECTION_SIZES, ids=['512x512', '800x1333'])
def test_stem_and_downsample_sizes_at_detection_sizes(arch, size):
    """Stride arithmetic alone (stages without blocks: no scan, fast)."""
    model = VMamba(arch=dict(arch, depths=[0, 0, 0, 0])).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (1, 8 * 2**i, h, w) for i, (h, w) in enumerate(expected_sizes(arch, *size))]


@pytest.mark.parametrize('arch', [SMALL_V2, SMALL_V0], ids=['v2', 'v0'])
@pytest.mark.parametrize('size', [
    DETECTION_SIZES[0], pytest.param(DETECTION_SIZES[1], marks=pytest.mark.slow)
], ids=['512x512', '800x1333'])
def test_output_shapes_at_detection_sizes(arch, size):
    model = VMamba(arch=dict(arch, depths=[1, 1, 1, 1], d_state=1)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (1, 8 * 2**i, h, w) for i, (h, w) in enumerate(expected_sizes(arch, *size))]
    assert all(o.is_contiguous() and torch.isfinite(o).all() for o in outs)


@pytest.mark.slow
@pytest.mark.parametrize('arch,size', [('tiny_s1l8', 512), ('v0_tiny', 224)])
def test_full_preset_forward(arch, size):
    model = VMamba(arch=arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [(1, 96 * 2**i, size // 2**(i + 2), size // 2**(i + 2))
                                              for i in range(4)]


# ---------------------------------------------------------------------------------------
# (e) bad input


def test_bad_input_and_arguments():
    model = VMamba(arch=SMALL_V2).eval()
    with pytest.raises(ValueError, match=r'expects input \(B, 3, H, W\), got \(1, 4, 32, 32\)'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r'expects input'):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match='smaller than'):
        VMamba(arch=SMALL_V0)(torch.randn(1, 3, 3, 8))
    with pytest.raises(ValueError, match="unknown arch 'tiny'.*tiny_s1l8"):
        VMamba(arch='tiny')
    with pytest.raises(ValueError, match=r"missing keys \['gated'\]"):
        VMamba(arch={k: v for k, v in SMALL_V2.items() if k != 'gated'})
    with pytest.raises(ValueError, match='downsample'):
        VMamba(arch=dict(SMALL_V2, downsample='v4'))
    with pytest.raises(ValueError, match='out_indices'):
        VMamba(arch=SMALL_V2, out_indices=(4, ))
    with pytest.raises(TypeError):
        VMamba(arch=SMALL_V2, embed_dims=96)  # strict signature: no **kwargs


@pytest.mark.parametrize('name', ['efficientvmamba_tiny', 'msvmamba_tiny', 'mobilemamba_t2',
                                  'vim_tiny'])
def test_other_family_checkpoint_is_rejected(name):
    state_dict = random_state_dict_from_tsv(keys_tsv(name), seed=0)
    assert not converter.signature(state_dict)
    family = name.split('_')[0]
    detected = [f for f in detect_families(state_dict) if f != 'vmamba']
    match = f"looks like a '{family}' checkpoint" if detected else \
        "does not look like an official 'vmamba'"
    assert detected in ([], [family])
    with pytest.raises(ValueError, match=match):
        convert_official('vmamba', {'model': state_dict})


# ---------------------------------------------------------------------------------------
# Pretrained loading through init_cfg


def _save_with_fake_cfgnode(path, contents_factory):
    """torch.save a checkpoint embedding a yacs CfgNode, like the official training
    script, without yacs installed: a throwaway ``yacs.config`` module for pickling."""
    saved = {name: sys.modules.get(name) for name in ('yacs', 'yacs.config')}
    yacs, config = types.ModuleType('yacs'), types.ModuleType('yacs.config')

    class CfgNode(dict):

        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__['__immutable__'] = False

    CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    config.CfgNode, yacs.config = CfgNode, config
    sys.modules.update({'yacs': yacs, 'yacs.config': config})
    try:
        torch.save(contents_factory(CfgNode), path)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_pretrained_official_classification_file(tmp_path):
    fixture = load_fixture('vmamba')
    official = fixture['state_dict']
    backbone_only = OrderedDict((k, v) for k, v in official.items()
                                if not k.startswith('outnorm'))
    width = official['outnorm3.weight'].shape[0]
    classification = OrderedDict(backbone_only, **{
        'classifier.norm.weight': torch.ones(width), 'classifier.norm.bias': torch.zeros(width),
        'classifier.head.weight': torch.zeros(1000, width),
        'classifier.head.bias': torch.zeros(1000)})
    path = tmp_path / 'vssm1_tiny_ckpt_epoch_1.pth'
    _save_with_fake_cfgnode(path, lambda CfgNode: {
        'model': classification, 'optimizer': {'state': {}}, 'epoch': 1, 'max_accuracy': 1.0,
        'config': CfgNode({'MODEL': CfgNode({'NAME': 'vssm1_tiny_0230s'}),
                           'TRAIN': CfgNode({'EPOCHS': 300})})})

    kwargs = converter.kwargs_from_official(dict(fixture['config'], pretrained=str(path)))
    model = MODELS.build(dict(type='VMamba', **kwargs))
    model.init_weights()
    expected = convert_official('vmamba', backbone_only)
    own = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(own[key], value), key
    for i in range(4):  # not in classification checkpoints: fresh LayerNorms
        assert torch.equal(own[f'outnorm{i}.weight'], torch.ones(16 * 2**i))
        assert torch.equal(own[f'outnorm{i}.bias'], torch.zeros(16 * 2**i))


def test_pretrained_detector_file_and_cli_roundtrip(tmp_path):
    fixture = load_fixture('vmamba')
    config, state_dict, case = fixture_cases(fixture)[0]
    detector = tmp_path / 'mask_rcnn_vssm.pth'
    torch.save({'meta': {'epoch': 12}, 'state_dict': OrderedDict(
        [(f'backbone.{k}', v) for k, v in state_dict.items()]
        + [('neck.fpn_convs.0.conv.weight', torch.zeros(4, 4, 3, 3))])}, detector)
    converted = tmp_path / 'vmamba_mmssm.pth'
    convert_cli('vmamba', [str(detector), str(converted), '--prefix', 'backbone.'])
    assert all(k.startswith('backbone.') for k in torch.load(converted)['state_dict'])

    kwargs = converter.kwargs_from_official(config)
    for source, prefix in ((detector, None), (converted, 'backbone.')):
        kwargs['init_cfg'] = dict(type='Pretrained', checkpoint=str(source), prefix=prefix)
        model = MODELS.build(dict(type='VMamba', **kwargs))
        model.init_weights()
        with torch.no_grad():
            outs = model.eval()(case['input'])
        for out, ref in zip(outs, case['outputs']):
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_pretrained_mismatching_files_raise(tmp_path):
    fixture = load_fixture('vmamba')
    config, state_dict, _ = fixture_cases(fixture)[0]
    other_width = fixture_cases(fixture)[-1][1]  # the dims=8, ssm_ratio=2 model
    assert other_width['patch_embed.0.weight'].shape != state_dict['patch_embed.0.weight'].shape
    few_keys = OrderedDict(list(state_dict.items())[:len(state_dict) // 5])
    unrelated = {'encoder.weight': torch.zeros(3, 3), 'decoder.bias': torch.zeros(3)}
    cases = [(other_width, 'mis-shaped'), (few_keys, 'missing'),
             (unrelated, "does not look like an official 'vmamba'")]
    for index, (contents, match) in enumerate(cases):
        path = tmp_path / f'bad{index}.pth'
        torch.save({'model': contents}, path)
        kwargs = converter.kwargs_from_official(dict(config, pretrained=str(path)))
        model = MODELS.build(dict(type='VMamba', **kwargs))
        with pytest.raises((RuntimeError, ValueError), match=match):
            model.init_weights()
    # strict conversion of a classification checkpoint into a from_official model
    with pytest.raises(RuntimeError, match='missing'):
        load_state_dict_checked(from_official('vmamba', config), convert_official(
            'vmamba', few_keys), strict=True)
