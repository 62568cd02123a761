"""MobileMamba backbone, its converter, BN fusion and the backbone + EfficientViTFPN neck.

Official names/shapes (spec keys files), parameter counts, numerical parity with the
official downstream ``MobileMamba`` (fixture), inference-time BN fusion, checkpoint
containers (``net``/``net_E``, detector prefixes), training behaviour and bad input.

The selective scan runs on the default backend (``MMSSM_SCAN_BACKEND`` picks another).
"""
import copy
import math
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import (fixture_case_ids, fixture_cases, from_official_reference, keys_files,
                      keys_tsv, load_fixture, official_cpu_merge, output_errors,
                      parse_keys_tsv, random_state_dict_from_tsv)

import mmssm.models  # noqa: F401  (registers the models)
from mmssm.converters import (convert_official, from_official, get_converter,
                              load_backbone_weights, load_state_dict_checked)
from mmssm.apis.analysis import count_params
from mmssm.converters.cli import main as convert_cli
from mmssm.converters.mobilemamba import (fuse_state_dict, is_fused, kwargs_from_official,
                                          select_weights)
from mmssm.models.backbones.mobilemamba import (MobileMamba, haar_filters,
                                                inverse_wavelet_transform, mrffi_split,
                                                se_reduced_channels, wavelet_transform)
from mmssm.loading import IncompatibleCheckpointError
from mmssm.models.necks.efficientvit_fpn import EfficientViTFPN
from mmssm.ops import scan_backend
from mmssm.registry import MODELS

converter = get_converter('mobilemamba')
ARCHS = ('t2', 't4', 's6', 'b1', 'b2', 'b4')
# spec §2: backbone parameters without the classifier (wavelet filters included)
SPEC_PARAMS = {'t2': 8_467_154, 't4': 13_726_194, 's6': 14_586_736,
               'b1': 16_672_953, 'b2': 16_672_953, 'b4': 16_672_953}
# The fixture's reduced architecture, for fast behaviour tests.
SMALL = dict(embed_dims=[36, 56, 72], depths=[1, 2, 1])


def with_classifier(state_dict, c3):
    """Add the official classification head (BN1d + Linear) to a backbone state dict."""
    out = OrderedDict(state_dict)
    out['head.bn.weight'] = torch.ones(c3)
    out['head.bn.bias'] = torch.zeros(c3)
    out['head.bn.running_mean'] = torch.zeros(c3)
    out['head.bn.running_var'] = torch.ones(c3)
    out['head.bn.num_batches_tracked'] = torch.tensor(5)
    out['head.l.weight'] = torch.randn(1000, c3)
    out['head.l.bias'] = torch.zeros(1000)
    return out


def max_rel_error(outputs, expected) -> float:
    """max |out - ref| / max |ref| over all maps (the maps reach |38| in the fixture)."""
    return max(float((o - r).abs().max() / r.abs().max()) for o, r in zip(outputs, expected))


def ours(state_dict):
    """A backbone state dict in mmssm's names (the converter renames the official SE's
    ``fc1``/``fc2``; every other official name is kept)."""
    return convert_official('mobilemamba', state_dict)


def assert_same_state(model, expected):
    """``model`` holds exactly ``expected`` (official or mmssm names)."""
    own, expected = model.state_dict(), ours(expected)
    assert set(own) == set(expected)
    for key, value in expected.items():
        assert torch.equal(own[key], value), key


@pytest.fixture(scope='module')
def fixture():
    return load_fixture('mobilemamba')


@pytest.fixture(scope='module')
def fixture_model(fixture):
    return from_official_reference('mobilemamba', fixture['config'], fixture['state_dict'])


# --------------------------------------------------------------------------------------
# names, shapes, parameter counts, strict loading
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_preset_matches_official_keys_and_counts(arch):
    path = keys_tsv(f'mobilemamba_{arch}')
    expected = parse_keys_tsv(path)
    model = MobileMamba(arch)
    own = model.state_dict()
    official = with_classifier(random_state_dict_from_tsv(path, seed=1),
                               model.embed_dims[-1])
    converted = convert_official('mobilemamba', official)
    # every official name is ours but the SE's (fc1/fc2 -> conv_reduce/conv_expand)
    renamed = {k for k in expected if k not in own}
    assert renamed and all(re.search(r'\.se\.fc[12]\.', k) for k in renamed)
    assert {k: tuple(v.shape) for k, v in own.items()} == {
        k: tuple(v.shape) for k, v in converted.items()}
    assert len(own) == len(expected)
    # the spec counts the official way: the Haar filters are (frozen) parameters there
    assert count_params(model) == SPEC_PARAMS[arch]
    assert not any('wt_filter' in n for n, _ in model.named_parameters())

    assert not any(k.startswith('head.') for k in converted)
    load_state_dict_checked(model, converted, strict=True)
    for key in ('patch_embed.0.c.weight',
                'blocks1.0.mixer.m.attn.global_op.wt_filter',
                'blocks3.3.mixer.m.attn.global_op.global_atten.A_logs'):
        assert torch.equal(model.state_dict()[key], official[key])


def test_spec_splits_and_widths():
    # spec §1.2 table (global / local / identity), both rounding branches.
    table = {
        (144, 272, 368): [(112, 28, 4), (192, 54, 26), (224, 110, 34)],
        (176, 368, 448): [(144, 32, 0), (256, 73, 39), (272, 134, 42)],
        (192, 384, 448): [(160, 32, 0), (272, 76, 36), (272, 134, 42)],
        (200, 376, 448): [(160, 40, 0), (256, 75, 45), (272, 134, 42)],
        (36, 56, 72): [(32, 4, 0), (32, 11, 13), (48, 21, 3)],  # fixture.md
    }
    for dims, splits in table.items():
        got = [mrffi_split(d, g, loc) for d, g, loc in zip(dims, (0.8, 0.7, 0.6),
                                                            (0.2, 0.2, 0.3))]
        assert got == splits, dims
    assert mrffi_split(40, 0.6, 0.2)[0] == 32  # floor(24) = 24: tie between 16 and 32 -> up
    assert mrffi_split(20, 0.35, 0.2)[0] == 0  # floor(7) < 8 -> no global part
    assert [se_reduced_channels(c) for c in (144, 224, 800, 1504)] == [40, 56, 200, 376]
    model = MobileMamba(dict(embed_dims=[36, 56, 72], depths=[1, 2, 1]))
    assert model.blocks2[1].se.conv_reduce.out_channels == 40
    ss2d = model.blocks3[3].mixer.m.attn.global_op.global_atten
    assert (ss2d.d_inner, ss2d.dt_rank, ss2d.d_state, ss2d.num_routes) == (96, 3, 1, 2)


def test_checkpoint_containers_and_prefixes():
    path = keys_tsv('mobilemamba_t2')
    plain = random_state_dict_from_tsv(path, seed=2)
    ema = random_state_dict_from_tsv(path, seed=3)
    model = MobileMamba('t2')
    wrapped = {
        'net': {'net': with_classifier(plain, 368), 'net_E': ema, 'epoch': 3},
        'model': {'model': plain},
        'state_dict': {'state_dict': OrderedDict(('backbone.' + k, v) for k, v in plain.items())},
        'module.': OrderedDict(('module.' + k, v) for k, v in plain.items()),
    }
    for name, checkpoint in wrapped.items():
        converted = convert_official('mobilemamba', checkpoint)
        load_state_dict_checked(model, converted, strict=True, source=name)
        assert_same_state(model, plain)
    # EMA weights on request
    both = {'net': plain, 'net_E': ema}
    load_state_dict_checked(model, convert_official('mobilemamba', select_weights(both, ema=True)))
    assert_same_state(model, ema)
    lone = select_weights({'net_E': ema}, ema=False)  # a lone EMA entry is found
    assert list(lone) == list(ema) and all(torch.equal(lone[k], ema[k]) for k in ema)
    with pytest.raises(KeyError, match='net_E'):
        select_weights(plain, ema=True)


def test_signature_accepts_only_mobilemamba():
    for path in keys_files(extra=True):
        sd = {key: torch.empty(0) for key in parse_keys_tsv(path)}  # only names matter
        assert converter.signature(sd) == path.stem.startswith('mobilemamba'), path.stem
    assert converter.signature(fuse_state_dict(random_state_dict_from_tsv(
        keys_tsv('mobilemamba_b1'))))


# --------------------------------------------------------------------------------------
# numerical parity with the official model
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('index', fixture_case_ids('mobilemamba'), ids='case{}'.format)
def test_fixture_parity(fixture, index):
    config, state_dict, case = fixture_cases(fixture)[index]
    model = from_official_reference('mobilemamba', config, state_dict)
    assert not model.training
    with torch.no_grad():
        outputs = model(case['input'])
    errors = output_errors(outputs, case['outputs'])
    print(f'case {index}: ' + ', '.join(f'{e["max_abs"]:.2e}' for e in errors))
    assert len(outputs) == len(case['outputs'])
    for i, (out, ref) in enumerate(zip(outputs, case['outputs'])):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4, msg=f'map {i}')


@pytest.mark.slow
def test_fixture_parity_float64(fixture, fixture_model):
    """Against the float64 reference: exact up to float64 rounding."""
    model = copy.deepcopy(fixture_model).double()
    for index, (_, _, case) in enumerate(fixture_cases(fixture)[:1]):
        if 'outputs_fp64' not in case or 'state_dict' in case or 'config' in case:
            continue
        with torch.no_grad():
            outputs = model(case['input'].double())
        for out, ref in zip(outputs, case['outputs_fp64']):
            torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_official_cpu_merge_is_the_batch_mixing_quirk(fixture):
    """The parity helper reproduces the official CPU merge (batch > 1 mixes samples); the
    backbone merges each sample on its own and offers no way to do otherwise."""
    config, state_dict, _ = fixture_cases(fixture)[0]
    official = from_official_reference('mobilemamba', config, state_dict)
    kwargs = kwargs_from_official(config)
    assert 'official_cpu_merge' not in kwargs
    with pytest.raises(TypeError, match='official_cpu_merge'):
        MobileMamba(**kwargs, official_cpu_merge=True)
    clean = from_official('mobilemamba', config, state_dict)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        batch = clean(x)
        single = [clean(x[i:i + 1]) for i in range(x.shape[0])]
        official_batch = official(x)
    # The same torch ops on both sides (the clean model's fused routed kernel sums in
    # another order), so a batch of one must give identical results.
    with torch.no_grad(), scan_backend('torch'):
        official_single, clean_single = official(x[:1]), clean(x[:1])
    for level, out in enumerate(batch):
        torch.testing.assert_close(out, torch.cat([s[level] for s in single]),
                                   rtol=1e-4, atol=1e-4 * float(out.abs().max()))
    for a, b in zip(official_single, clean_single):  # identical for a batch of one
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (official_batch[-1] - batch[-1]).abs().max() > 1e-2


# --------------------------------------------------------------------------------------
# BN fusion
# --------------------------------------------------------------------------------------
def test_switch_to_deploy_equivalence(fixture, fixture_model):
    case = fixture['cases'][1]
    fused = copy.deepcopy(fixture_model).switch_to_deploy()
    assert fused.deploy and fused.switch_to_deploy() is fused  # idempotent
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    # the fused layout is exactly what fusing the official state dict gives
    expected = fuse_state_dict(ours(fixture['state_dict']))
    assert set(fused.state_dict()) == set(expected)
    assert set(MobileMamba(dict(SMALL), deploy=True).state_dict()) == set(expected)

    x64 = torch.randn(1, 3, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        ref = fixture_model(case['input'])
        out = fused(case['input'])
        ref64 = copy.deepcopy(fixture_model).double()(x64)
        out64 = copy.deepcopy(fixture_model).double().switch_to_deploy()(x64)
    err32 = max_rel_error(out, ref)
    abs32 = max(float((o - r).abs().max()) for o, r in zip(out, ref))
    err64 = max(float((o - r).abs().max()) for o, r in zip(out64, ref64))
    print(f'BN fusion: fp32 max abs error {abs32:.2e} (relative to the largest output '
          f'{err32:.2e}), fp64 max abs error {err64:.2e}')
    # Exact algebra: float64 agrees to rounding. In float32 the random fixture weights
    # amplify rounding (outputs reach |38|; 1 vs 2 threads already differ by 1.6e-4).
    assert err64 < 1e-10
    assert err32 < 1e-5  # the bound, relative to the output scale


def test_fused_checkpoints_load_both_ways(fixture, fixture_model):
    case = fixture['cases'][1]
    fused_sd = fuse_state_dict(fixture['state_dict'])
    assert is_fused(fused_sd) and not is_fused(fixture['state_dict'])
    # a fused official checkpoint switches the model to its deploy layout
    model = from_official_reference('mobilemamba', fixture['config'], fused_sd)
    assert model.deploy
    # an unfused checkpoint is fused on the fly for a model built deployed
    kwargs = kwargs_from_official(fixture['config'])
    deployed = official_cpu_merge(MobileMamba(**kwargs, deploy=True).eval())
    load_backbone_weights(deployed, 'mobilemamba', {'net': fixture['state_dict']}, strict=True)
    with torch.no_grad():
        ref = fixture_model(case['input'])
        for other in (model, deployed):
            assert max_rel_error(other(case['input']), ref) < 1e-5
    half = OrderedDict(fixture['state_dict'])
    half['patch_embed.0.weight'] = half.pop('patch_embed.0.c.weight')
    with pytest.raises(ValueError, match='mixes the BN-fused layout'):
        convert_official('mobilemamba', half)


# --------------------------------------------------------------------------------------
# pretrained loading and the CLI
# --------------------------------------------------------------------------------------
def test_init_cfg_pretrained_and_cli(tmp_path, fixture):
    official = with_classifier(fixture['state_dict'], 72)
    ema = OrderedDict((k, v + 1 if v.is_floating_point() else v)
                      for k, v in fixture['state_dict'].items())
    src = tmp_path / 'mobilemamba_small.pth'
    torch.save({'net': official, 'net_E': ema, 'epoch': 300}, src)

    with pytest.raises(IncompatibleCheckpointError, match=r'7 unexpected \(head\.bn\.'):
        MobileMamba(dict(SMALL), init_cfg=dict(type='Pretrained', checkpoint=str(src))
                    ).init_weights()  # strict: the ImageNet classifier must be declared
    model = MobileMamba(dict(SMALL), init_cfg=dict(type='Pretrained', checkpoint=str(src),
                                                   drop_classifier=True))
    model.init_weights()
    assert_same_state(model, fixture['state_dict'])
    model.load_pretrained(str(src), key='net_E', drop_classifier=True)
    assert_same_state(model, ema)

    fused_src = tmp_path / 'fused.pth'
    torch.save(fuse_state_dict(fixture['state_dict']), fused_src)
    model = MobileMamba(dict(SMALL), init_cfg=dict(type='Pretrained', checkpoint=str(fused_src)))
    model.init_weights()
    assert model.deploy

    dst = convert_cli('mobilemamba', [str(src), str(tmp_path / 'out.pth')])
    saved = torch.load(dst, weights_only=True)['state_dict']
    assert set(saved) == set(ours(fixture['state_dict']))
    dst = convert_cli('mobilemamba', [str(src), str(tmp_path / 'ema.pth'), '--key', 'net_E',
                                      '--prefix', 'backbone.'])
    saved = torch.load(dst, weights_only=True)['state_dict']
    key = 'blocks1.0.dw0.m.c.weight'
    assert torch.equal(saved['backbone.' + key], ema[key])


# --------------------------------------------------------------------------------------
# configuration mapping and bad input
# --------------------------------------------------------------------------------------
def test_kwargs_from_official(fixture):
    kwargs = kwargs_from_official(fixture['config'])
    assert kwargs['arch']['embed_dims'] == [36, 56, 72]
    assert kwargs['arch']['drop_path_rate'] == pytest.approx(0.03)
    assert kwargs['out_indices'] == (0, 1, 2, 3)
    cfg = dict(fixture['config'], pretrained='ckpt.pth', norm_eval=True, in_chans=4)
    kwargs = kwargs_from_official(cfg)
    assert kwargs['init_cfg'] == dict(type='Pretrained', checkpoint='ckpt.pth',
                                      drop_classifier=True)
    assert kwargs['norm_eval'] is True and kwargs['in_channels'] == 4
    model = from_official('mobilemamba', dict(cfg, pretrained=None, out_indices=(1, 2, 3)))
    assert model.norm_eval and model.out_indices == (1, 2, 3)

    for bad in (dict(forward_type='v05'), dict(stages=['s', 's', 't']), dict(sync_bn=True),
                dict(frozen_stages=0), dict(down_ops=[['subsample', 2], [''], ['']])):
        with pytest.raises(NotImplementedError, match=list(bad)[0]):
            kwargs_from_official(dict(fixture['config'], **bad))
    with pytest.raises(ValueError, match='unknown official config keys'):
        kwargs_from_official(dict(fixture['config'], window_size=7))
    cfg = dict(fixture['config'])
    del cfg['embed_dim']
    with pytest.raises(ValueError, match='embed_dim'):
        kwargs_from_official(cfg)


def test_bad_input():
    model = MobileMamba(dict(SMALL), out_indices=(3, ))
    with pytest.raises(ValueError, match=r'expects input \(B, 3, H, W\), got \(1, 4, 32, 32\)'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r'expects input'):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="unknown arch 'b3'"):
        MobileMamba('b3')
    with pytest.raises(ValueError, match='missing keys'):
        MobileMamba(dict(embed_dims=[36, 56, 72]))
    with pytest.raises(ValueError, match='kernel_sizes'):
        MobileMamba(dict(SMALL, kernel_sizes=[7, 4, 3]))
    with pytest.raises(ValueError, match='out_indices'):
        MobileMamba(dict(SMALL), out_indices=(4, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        MobileMamba(dict(SMALL), frozen_stages=4)
    vmamba_sd = random_state_dict_from_tsv(keys_tsv('vmamba_tiny_s1l8'))
    with pytest.raises(ValueError, match='vmamba|does not look like'):
        convert_official('mobilemamba', vmamba_sd)
    with pytest.raises(ValueError, match='vmamba|does not look like'):
        from_official('mobilemamba', dict(embed_dim=[36, 56, 72], depth=[1, 2, 1]), vmamba_sd)
    t2 = convert_official('mobilemamba', random_state_dict_from_tsv(keys_tsv('mobilemamba_t2')))
    with pytest.raises(IncompatibleCheckpointError, match='mis-shaped'):
        load_state_dict_checked(MobileMamba('b1'), t2)


# --------------------------------------------------------------------------------------
# shapes, training behaviour
# --------------------------------------------------------------------------------------
def test_output_shapes_and_registry():
    model = MODELS.build(dict(type='mmssm.MobileMamba', arch=dict(SMALL),
                              out_indices=(0, 1, 2, 3))).eval()
    assert model.out_channels == (36, 36, 56, 72)
    assert model.out_strides == (16, 16, 32, 64)
    for height, width in ((50, 70), (33, 17)):
        with torch.no_grad():
            outs = model(torch.randn(1, 3, height, width))
        sizes = [(height, width)]  # every stride-2 step: s -> ceil(s / 2)
        for _ in range(6):
            sizes.append(tuple(math.ceil(s / 2) for s in sizes[-1]))
        expected = [sizes[4], sizes[4], sizes[5], sizes[6]]
        assert [tuple(o.shape) for o in outs] == [
            (1, c, *s) for c, s in zip(model.out_channels, expected)]


def test_backward_frozen_stages_norm_eval_and_with_cp():
    torch.manual_seed(0)
    model = MobileMamba(dict(SMALL), out_indices=(1, 2, 3), drop_path_rate=0.1,
                        frozen_stages=1, norm_eval=True)
    model.train()
    assert not model.patch_embed.training and not model.blocks1.training
    assert model.blocks2.training and model.blocks3[3].drop_path.training
    assert all(not m.training for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm))
    for module, trainable in ((model.patch_embed, False), (model.blocks1, False),
                              (model.blocks2, True), (model.blocks3, True)):
        assert all(p.requires_grad == trainable for p in module.parameters())
    x = torch.randn(2, 3, 48, 48)
    sum(o.square().mean() for o in model(x)).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None, name
    wt = model.blocks2[3].mixer.m.attn.global_op.wt_filter
    assert not isinstance(wt, nn.Parameter) and torch.equal(wt, haar_filters(wt.shape[0] // 4))

    # gradient checkpointing: same outputs and gradients
    plain = MobileMamba(dict(SMALL), out_indices=(3, )).eval()
    cp = MobileMamba(dict(SMALL), out_indices=(3, ), with_cp=True).eval()
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    grads = []
    for m in (plain, cp):
        out = m(x)[0]
        grads.append(torch.autograd.grad(out.sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1])


def test_haar_pair_is_perfect_reconstruction():
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    filters = haar_filters(3).double()
    bands = wavelet_transform(x, filters)
    assert bands.shape == (2, 3, 4, 3, 4)
    torch.testing.assert_close(bands[:, :, 0], F.avg_pool2d(x, 2) * 2)  # LL = 2 * mean
    torch.testing.assert_close(inverse_wavelet_transform(bands, filters), x)


def test_backbone_with_neck_end_to_end():
    backbone = MobileMamba(dict(SMALL)).eval()
    neck = EfficientViTFPN([36, 56, 72], 16, num_outs=5, num_extra_trans_convs=2).eval()
    with torch.no_grad():
        outs = neck(backbone(torch.randn(1, 3, 128, 128)))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 128 // s, 128 // s)
                                              for s in (4, 8, 16, 32, 64)]


def test_haar_filters_are_buffers_and_load_from_parameter_checkpoints(monkeypatch):
    """The fixed Haar filters are persistent buffers: in the state dict under the official
    names (official checkpoints hold them as frozen parameters and load unchanged), never
    handed to an optimizer, so building one logs no 'requires_grad=False' lines."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.optim.optimizer import default_constructor
    model = MobileMamba(dict(SMALL), out_indices=(3, ))
    names = [n for n, _ in model.named_buffers() if n.endswith('wt_filter')]
    assert len(names) == 2 * sum(model.depths) and set(names) <= set(model.state_dict())
    assert not [n for n, _ in model.named_parameters() if n.endswith('wt_filter')]
    # an older checkpoint: the filters saved as parameters (here: altered values, which
    # must be the ones used, as the official model uses the loaded values)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = names[0]
    state[key] = torch.nn.Parameter(state[key] * 2, requires_grad=False)
    load_state_dict_checked(model, state, strict=True)
    assert torch.equal(model.state_dict()[key], state[key])
    logged = []
    monkeypatch.setattr(default_constructor, 'print_log',
                        lambda msg, *args, **kwargs: logged.append(str(msg)))
    config = dict(optimizer=dict(type='AdamW', lr=1e-3), paramwise_cfg=dict(flat_decay_mult=0.0))
    control = nn.Linear(2, 2)
    control.bias.requires_grad = False  # what a frozen parameter makes mmengine log
    build_optim_wrapper(control, config)
    assert any('requires_grad=False' in m for m in logged)
    logged.clear()
    build_optim_wrapper(model, config)
    assert not [m for m in logged if 'requires_grad' in m]


@pytest.mark.parametrize('bias', [False, True])
def test_channel_scale_conv_is_the_depthwise_1x1_conv(bias):
    """MK-DeConv's dwconv1x1 computes the per-channel product instead of a grouped 1x1
    convolution (which torch runs one channel at a time on CPU): same keys, same
    function, gradients included."""
    from mmssm.models.layers import ChannelScaleConv
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 12, 1, groups=12, bias=bias)
    scale = ChannelScaleConv(12, bias=bias)
    assert scale.state_dict().keys() == conv.state_dict().keys()
    scale.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(2, 12, 5, 7, requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    for inp in (x, x_cl):
        torch.testing.assert_close(scale(inp), conv(inp), rtol=1e-6, atol=1e-6)
    scale(x).sum().backward()
    grad_scale = scale.weight.grad.clone()
    conv(x).sum().backward()
    torch.testing.assert_close(grad_scale, conv.weight.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r'ChannelScaleConv expects \(B, 12, H, W\)'):
        scale(torch.randn(2, 11, 5, 7))
