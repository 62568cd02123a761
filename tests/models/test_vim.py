"""Vim backbone and SimpleFPN neck: official checkpoint names/shapes, numerical parity
with the official segmentation wrapper, parameter counts, position-embedding and rope
handling for other sizes, training behaviour, and bad input.

The selective scan runs on the default backend (``MMSSM_SCAN_BACKEND`` picks another).
"""
import argparse
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from conftest import (fixture_case_ids, fixture_cases, keys_files, keys_tsv, load_fixture,
                      output_errors, parse_keys_tsv, random_state_dict_from_tsv)

import mmssm.models  # noqa: F401  (registers the backbones and necks)
from mmssm.converters import (convert_official, detect_families, from_official, get_converter,
                              load_state_dict_checked)
from mmssm.converters.cli import main as convert_cli
from mmssm.converters.vim import _feature_indices
from mmssm.models.backbones.vim import (Vim, VisionRope, resize_pos_embed, rope_tables,
                                        token_grid)
from mmssm.models.necks.simple_fpn import SimpleFPN
from mmssm.registry import MODELS

converter = get_converter('vim')

# spec §2: measured #params of the official classification models (with the 1000-class head)
SPEC_PARAMS = {
    'tiny': 7_148_008,
    'tiny_stride8': 7_250_344,
    'small': 25_796_584,
    'small_stride8': 26_001_256,
    'base': 97_598_440,
}
KEY_NAMES = [p.stem[len('vim_'):] for p in keys_files('vim_*.tsv')]

# Reduced width/depth for CPU-speed behaviour tests.
SMALL = dict(embed_dims=16, depth=3, d_state=4)


def model_for_keys(name: str, **extra) -> dict:
    """Vim kwargs whose state dict is the keys file ``vim_<name>.tsv``."""
    if name.endswith('_seg_upernet'):
        # The official UperNet backbones: 512 px, no class token, adapters; Vim-S uses rope.
        arch = name[:-len('_seg_upernet')]
        return dict(arch=arch, img_size=512, with_cls_token=False, with_fpn=True,
                    out_indices=(5, 11, 17, 23), use_rope=arch == 'small',
                    rope_residual=arch == 'small', **extra)
    return dict(arch=name, **extra)


def meta_state_dict(name: str) -> 'OrderedDict[str, torch.Tensor]':
    return OrderedDict((k, torch.empty(shape, device='meta'))
                       for k, shape in parse_keys_tsv(keys_tsv(f'vim_{name}')).items())


def same_tensors(state_dict, reference) -> bool:
    """Equal keys (order aside) and equal values."""
    return set(state_dict) == set(reference) and all(
        torch.equal(state_dict[k], reference[k]) for k in reference)


def official_classification_state_dict(model: Vim, num_classes: int = 10) -> OrderedDict:
    """An official-format classification state dict for ``model``'s architecture:
    random values, plus the classifier."""
    gen = torch.Generator().manual_seed(1)
    sd = OrderedDict((k, torch.randn(v.shape, generator=gen))
                     for k, v in model.state_dict().items())
    sd['head.weight'] = torch.randn(num_classes, model.embed_dims, generator=gen)
    sd['head.bias'] = torch.randn(num_classes, generator=gen)
    return sd


# ------------------------------------------------------------------------------------
# Official names and shapes
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', KEY_NAMES)
def test_official_keys_convert_and_load_strict(name):
    """Every official state dict (classification and UperNet backbones) converts and
    loads strictly; our state dict has exactly those keys and shapes, in order."""
    assert len(KEY_NAMES) == 7
    with torch.device('meta'):
        model = Vim(**model_for_keys(name))
    official = meta_state_dict(name)
    converted = convert_official('vim', official)
    expected = OrderedDict((k, tuple(v.shape)) for k, v in official.items()
                           if not k.startswith('head.'))
    assert OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items()) == expected
    assert list(converted) == list(expected)
    load_state_dict_checked(model, converted, strict=True)
    assert converter.signature(official) and converter.signature(model.state_dict())
    assert detect_families(official) == ['vim']


def test_checkpoint_wrappings_file_loading_and_cli(tmp_path):
    """Official classification files ({'model', 'args': Namespace}), mmseg checkpoints
    ('state_dict' + 'backbone.'), DataParallel 'module.' prefixes; init_cfg Pretrained
    and the converter CLI."""
    official = random_state_dict_from_tsv(keys_tsv('vim_tiny'), seed=3)
    plain = convert_official('vim', official)
    assert 'head.weight' not in plain and len(plain) == len(official) - 2
    wrappings = [
        {'model': official, 'epoch': 299},
        {'state_dict': {f'backbone.{k}': v for k, v in plain.items()},
         'meta': {'iter': 60000}},
        {f'module.{k}': v for k, v in official.items()},
        {'model': {f'module.{k}': v for k, v in official.items()}},
    ]
    for wrapped in wrappings:
        converted = convert_official('vim', wrapped)
        assert list(converted) == list(plain)
        assert all(converted[k] is plain[k] for k in plain)  # values passed through

    src = tmp_path / 'vim_t_midclstok_76p1acc.pth'
    torch.save({'model': official, 'args': argparse.Namespace(model='vim_tiny', lr=5e-4),
                'epoch': 299}, src)
    model = Vim(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(src),
                                           drop_classifier=True))
    model.init_weights()
    assert same_tensors(model.state_dict(), plain)

    dst = convert_cli('vim', [str(src), str(tmp_path / 'vim_tiny_mmssm.pth')])
    saved = torch.load(dst, weights_only=True)['state_dict']
    fresh = Vim(arch='tiny')
    load_state_dict_checked(fresh, saved, strict=True)
    assert same_tensors(fresh.state_dict(), plain)


@pytest.mark.parametrize('arch', sorted(SPEC_PARAMS))
def test_param_count_matches_spec(arch):
    with torch.device('meta'):
        model = Vim(arch=arch)
    count = sum(p.numel() for p in model.parameters())
    head = model.embed_dims * 1000 + 1000  # the official ImageNet classifier
    assert count + head == SPEC_PARAMS[arch]


# ------------------------------------------------------------------------------------
# Parity with the official segmentation wrapper
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize('index', fixture_case_ids('vim'))
def test_fixture_parity(index):
    fixture = load_fixture('vim')
    config, state_dict, case = fixture_cases(fixture)[index]
    model = from_official('vim', config, state_dict)
    with torch.no_grad():
        outputs = model(case['input'])
    errors = output_errors(outputs, case['outputs'])
    for out, ref in zip(outputs, case['outputs']):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert max(e['max_abs'] for e in errors) < 1e-4
    if 'outputs_fp64' in case:  # the same graph in float64: agreement to rounding
        with torch.no_grad():
            outputs64 = model.double()(case['input'].double())
        for out, ref in zip(outputs64, case['outputs_fp64']):
            torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_fused_route_ops_in_inference_equal_the_composite_path(monkeypatch):
    """CPU float32 inference runs the mixer's conv + SiLU and its merge + gate as fused
    kernels (mmssm.ops.bidirectional); the composite path (training, other devices)
    computes the same function."""
    import mmssm.ops.bidirectional as bidirectional
    from mmssm.ops.kernels import backend_available
    if not backend_available('cpu'):
        pytest.skip('mmssm._C is not built')
    fixture = load_fixture('vim')
    config, state_dict, case = fixture_cases(fixture)[0]
    model = from_official('vim', config, state_dict).eval()
    calls = []
    fused = bidirectional.fused_inference_applies
    monkeypatch.setattr(bidirectional, 'fused_inference_applies',
                        lambda *a: calls.append(fused(*a)) or calls[-1])
    with torch.no_grad():
        outputs = model(case['input'])
    assert len(calls) == 2 * len(model.layers) and all(calls)
    monkeypatch.setattr(bidirectional, 'fused_inference_applies', lambda *a: False)
    with torch.no_grad():
        composite = model(case['input'])
    for out, ref in zip(outputs, composite):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fixture_rope_tables_are_the_official_formula():
    fixture = load_fixture('vim')
    config, state_dict, _ = fixture_cases(fixture)[1]
    assert config['if_rope']
    grid = config['img_size'] // config['patch_size']
    cos, sin = rope_tables(config['embed_dim'], (grid, grid), config.get('pt_hw_seq_len', 14))
    assert torch.equal(cos, state_dict['rope.freqs_cos'])
    assert torch.equal(sin, state_dict['rope.freqs_sin'])


def test_kwargs_from_official_maps_the_fixture_configs():
    fixture = load_fixture('vim')
    tiny = converter.kwargs_from_official(fixture['config'])
    small = converter.kwargs_from_official(fixture['cases'][1]['config'])
    assert tiny['arch'] == dict(embed_dims=32, depth=6, patch_size=16, stride=16, d_state=4)
    assert (tiny['feature_type'], tiny['last_feature'], tiny['use_rope']) == ('mixer', 'mixer',
                                                                             False)
    assert (small['feature_type'], small['last_feature']) == ('residual', 'residual')
    assert small['use_rope'] and small['rope_residual'] and not small['with_cls_token']
    assert tiny['out_indices'] == small['out_indices'] == (1, 3, 4, 5)
    assert tiny['drop_path_rate'] == 0.1 and tiny['fpn_scales'] == (4.0, 2.0, 1.0, 0.5)


def test_official_out_indices_semantics():
    # mixer features: every listed block, in block order
    assert _feature_indices([5, 1, 3], depth=6, residual=False) == (1, 3, 5)
    # residual features: the last block only when it is the LAST entry
    assert _feature_indices([1, 3, 5], depth=6, residual=True) == (1, 3, 5)
    assert _feature_indices([5, 3], depth=6, residual=True) == (3, )
    with pytest.raises(NotImplementedError, match='selects no block'):
        _feature_indices([-1], depth=6, residual=False)


@pytest.mark.parametrize('overrides, error, match', [
    (dict(bimamba_type='v1'), NotImplementedError, 'bimamba'),
    (dict(if_bidirectional=True), NotImplementedError, 'if_bidirectional'),
    (dict(ssm_cfg=dict(use_fast_path=False)), NotImplementedError, 'unidirectional'),
    (dict(ssm_cfg=dict(layer_norm=True)), NotImplementedError, 'layer_norm'),
    (dict(patch_size=14, stride=14), NotImplementedError, 'patch_size 16 and 8'),
    (dict(use_double_cls_token=True), NotImplementedError, 'double'),
    (dict(if_abs_pos_embed=False), NotImplementedError, 'if_abs_pos_embed'),
    (dict(out_indices=[0, 1, 2, 3, 4]), NotImplementedError, '4 adapters'),
    (dict(channels=3), TypeError, 'in_chans'),
])
def test_kwargs_from_official_rejects_unsupported(overrides, error, match):
    config = dict(load_fixture('vim')['config'], **overrides)
    with pytest.raises(error, match=match):
        converter.kwargs_from_official(config)


def test_official_config_variants_build_and_run():
    """Patch-8 adapters, stride 8 with patch 16, LayerNorm blocks, no adapters, one
    out index replicated to four levels: shapes follow the official arithmetic."""
    base = dict(load_fixture('vim')['config'], depth=2, out_indices=[1])
    x = torch.randn(1, 3, 64, 64)
    for overrides, sizes in [
        (dict(), [16, 8, 4, 2]),  # one feature replicated through fpn1..fpn4
        (dict(patch_size=8, stride=8), [16, 8, 4, 2]),
        (dict(stride=8), [28, 14, 7, 3]),  # official: adapters chosen by patch_size
        (dict(rms_norm=False, if_fpn=False), [4]),
    ]:
        model = from_official('vim', dict(base, **overrides))
        with torch.no_grad():
            outs = model(x)
        assert [o.shape[-1] for o in outs] == sizes, overrides
        assert all(o.shape[1] == 32 for o in outs)


# ------------------------------------------------------------------------------------
# Position embedding, class token and rope for other sizes
# ------------------------------------------------------------------------------------
def test_resize_pos_embed_identity_and_cls_entry():
    pos = torch.randn(1, 4 * 6 + 1, 8)
    assert resize_pos_embed(pos, (4, 6), (4, 6), with_cls_token=True) is pos
    out = resize_pos_embed(pos, (4, 6), (5, 3), with_cls_token=True)
    assert out.shape == (1, 5 * 3 + 1, 8)
    # class entry: middle of the source (12) -> middle of the result (7), unchanged
    torch.testing.assert_close(out[:, 7], pos[:, 12], rtol=0, atol=0)
    # the patch entries are the bicubic resize of the (4, 6) grid without the class entry
    grid = torch.cat([pos[:, :12], pos[:, 13:]], 1).reshape(1, 4, 6, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(5, 3), mode='bicubic', align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(1, 15, 8)
    torch.testing.assert_close(torch.cat([out[:, :7], out[:, 8:]], 1), ref)


def test_resize_pos_embed_non_square_orientation():
    """A row-only embedding stays row-only (and unchanged along rows of equal count)
    when only the width changes, and vice versa: rows/columns are not mixed up."""
    rows = torch.arange(4.).view(4, 1).expand(4, 6)
    cols = torch.arange(6.).view(1, 6).expand(4, 6)
    pos = torch.stack([rows, cols], -1).reshape(1, 24, 2)
    wide = resize_pos_embed(pos, (4, 6), (4, 9), with_cls_token=False).reshape(4, 9, 2)
    torch.testing.assert_close(wide[..., 0], torch.arange(4.).view(4, 1).expand(4, 9))
    tall = resize_pos_embed(pos, (4, 6), (7, 6), with_cls_token=False).reshape(7, 6, 2)
    torch.testing.assert_close(tall[..., 1], torch.arange(6.).view(1, 6).expand(7, 6))


def test_other_input_size_equals_a_model_built_for_it():
    """Running at another (non-square) size interpolates pos_embed exactly as loading
    the weights into a model built for that size."""
    model = Vim(arch=SMALL, img_size=64, out_indices=(1, 2)).eval()
    other = Vim(arch=SMALL, img_size=(96, 48), out_indices=(1, 2)).eval()
    load_state_dict_checked(other, other.adapt_state_dict(dict(model.state_dict())))
    assert other.pos_embed.shape == (1, 6 * 3 + 1, 16)
    x = torch.randn(1, 3, 96, 48)
    with torch.no_grad():
        for a, b in zip(model(x), other(x)):
            assert a.shape == (1, 16, 6, 3)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_classification_checkpoint_into_a_model_without_class_token():
    """The middle class entry (and only it) is dropped; patch 0 keeps its position
    (the official loader would shift it, see docs/vim.md)."""
    source = Vim(arch=SMALL, img_size=64)  # 4x4 grid, class entry at index 8
    official = official_classification_state_dict(source)
    target = Vim(arch=SMALL, img_size=64, with_cls_token=False, out_indices=(0, 1, 2))
    converted = target.adapt_state_dict(dict(convert_official('vim', official)))
    load_state_dict_checked(target, converted, strict=True)
    pos = official['pos_embed']
    torch.testing.assert_close(target.pos_embed.data, torch.cat([pos[:, :8], pos[:, 9:]], 1),
                               rtol=0, atol=0)
    # ... and into a larger grid: resize of exactly those 16 entries
    larger = Vim(arch=SMALL, img_size=96, with_cls_token=False)
    converted = larger.adapt_state_dict(dict(convert_official('vim', official)))
    ref = resize_pos_embed(torch.cat([pos[:, :8], pos[:, 9:]], 1), (4, 4), (6, 6), False)
    torch.testing.assert_close(converted['pos_embed'], ref, rtol=0, atol=0)
    # a model WITH class token refuses a checkpoint without one
    with pytest.raises(ValueError, match='with_cls_token=False'):
        Vim(arch=SMALL, img_size=64).adapt_state_dict(dict(target.state_dict()))


def test_segmentor_checkpoint_file_into_another_size(tmp_path):
    """An mmseg segmentor file (``state_dict``, ``backbone.*`` + heads) loads through
    init_cfg into a backbone built for another size; mmengine's own loader adapts too."""
    seg = Vim(arch=SMALL, img_size=64, with_cls_token=False, with_fpn=True,
              use_rope=True, out_indices=(0, 1, 2))
    full = {f'backbone.{k}': v for k, v in seg.state_dict().items()}
    full['decode_head.conv_seg.weight'] = torch.randn(150, 16, 1, 1)
    path = tmp_path / 'upernet_vim.pth'
    torch.save({'state_dict': full, 'meta': {'iter': 60000}}, path)

    kwargs = dict(arch=SMALL, img_size=96, with_cls_token=False, with_fpn=True,
                  use_rope=True, out_indices=(0, 1, 2))
    with pytest.raises(RuntimeError, match=r"1 mis-shaped \(pos_embed: checkpoint \(1, 16, 16\) "
                       r"vs model \(1, 36, 16\)\)"):  # strict: a resize must be declared
        Vim(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
    model = Vim(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                        allow_resized=['pos_embed']))
    model.init_weights()
    expected = resize_pos_embed(seg.pos_embed.data, (4, 4), (6, 6), with_cls_token=False)
    torch.testing.assert_close(model.pos_embed.data, expected, rtol=0, atol=0)
    assert model.rope.freqs_cos.shape == (36, 16)  # own tables, not the 4x4 ones
    torch.testing.assert_close(model.layers[2].mixer.A_b_log, seg.layers[2].mixer.A_b_log)

    from mmengine.runner.checkpoint import load_checkpoint
    other = Vim(**kwargs)
    load_checkpoint(other, str(path), revise_keys=[(r'^backbone\.', '')], strict=False)
    torch.testing.assert_close(other.pos_embed.data, expected, rtol=0, atol=0)


def test_rope_tables_for_other_grids_and_class_token():
    cos, sin = rope_tables(8, (2, 3), 14)
    assert cos.shape == (6, 8)
    angles = torch.atan2(sin, cos).view(2, 3, 8)
    # first half rotates with the row only, second half with the column only
    assert torch.allclose(angles[:, :1, :4], angles[:, :, :4])
    assert torch.allclose(angles[:1, :, 4:], angles[:, :, 4:])
    rope = VisionRope(8, (2, 3))
    c, s = rope.tables((2, 3), cls_index=3)
    assert torch.equal(c[3], torch.ones(8)) and torch.equal(s[3], torch.zeros(8))
    assert torch.equal(c[:3], rope.freqs_cos[:3]) and torch.equal(c[4:], rope.freqs_cos[3:])
    x = torch.randn(2, 7, 8)
    assert torch.equal(VisionRope.rotate(x, c, s)[:, 3], x[:, 3])
    # a rope model runs at another size, with a class token
    model = Vim(arch=SMALL, img_size=64, use_rope=True, rope_residual=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 80, 48))[0].shape == (1, 16, 5, 3)


def test_dense_outputs_at_512_and_non_square():
    model = Vim(arch=dict(embed_dims=16, depth=2, d_state=2), img_size=224,
                out_indices=(0, 1), with_fpn=True).eval()
    with torch.no_grad():
        square = model(torch.randn(1, 3, 512, 512))
        wide = model(torch.randn(1, 3, 320, 480))
    assert [tuple(o.shape[2:]) for o in square] == [(128, 128), (64, 64)]
    assert [tuple(o.shape[2:]) for o in wide] == [(80, 120), (40, 60)]
    assert token_grid((320, 480), 16, 16) == (20, 30)


@pytest.mark.slow
@pytest.mark.parametrize('arch, size, grid, scales', [
    ('tiny', (512, 384), (32, 24), (4, 2, 1, 0.5)),
    ('tiny_stride8', (256, 192), (31, 23), (2, 1, 0.5, 0.25)),
])
def test_full_preset_at_detection_sizes(arch, size, grid, scales):
    """Full 24-block presets, non-square, official adapters (slow on the torch scan)."""
    model = Vim(arch=arch, out_indices=(5, 11, 17, 23), with_fpn=True).eval()
    assert token_grid(size, 16, model.stride) == grid
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (1, 192, int(grid[0] * s), int(grid[1] * s)) for s in scales]
    assert all(torch.isfinite(o).all() for o in outs)


# ------------------------------------------------------------------------------------
# Training behaviour
# ------------------------------------------------------------------------------------
def test_backward_reaches_every_parameter_through_simple_fpn():
    model = Vim(arch=SMALL, img_size=64, drop_path_rate=0.2)
    neck = MODELS.build(dict(type='SimpleFPN', in_channels=16, out_channels=8,
                             norm_cfg=dict(type='LN')))
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    feats = neck(model(x))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 16), (2, 8, 8, 8), (2, 8, 4, 4),
                                               (2, 8, 2, 2), (2, 8, 1, 1)]
    sum(f.square().mean() for f in feats).backward()
    missing = [n for n, p in [*model.named_parameters(), *neck.named_parameters()]
               if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_drop_path_rates_follow_the_official_rule():
    model = Vim(arch=dict(embed_dims=16, depth=5, d_state=2), drop_path_rate=0.4)
    rates = [layer.drop_path.drop_prob for layer in model.layers]
    assert rates == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    assert model.drop_path.drop_prob == pytest.approx(0.4)


def test_frozen_stages_norm_eval_and_checkpointing():
    model = Vim(arch=SMALL, img_size=64, frozen_stages=1, with_fpn=True, norm_eval=True,
                out_indices=(0, 2))
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {'pos_embed', 'cls_token', 'patch_embed.proj.weight'} <= frozen
    assert all(n.startswith(('pos_embed', 'cls_token', 'patch_embed', 'layers.0.'))
               for n in frozen)
    assert any(n.startswith('layers.0.') for n in frozen)
    assert not model.layers[0].training and model.layers[1].training
    assert not model.fpn1[1].training  # norm_eval keeps the adapter BN frozen
    with pytest.raises(ValueError, match='frozen_stages'):
        Vim(arch=SMALL, frozen_stages=4)

    plain = Vim(arch=SMALL, img_size=64, use_rope=True, rope_residual=True)
    checkpointed = Vim(arch=SMALL, img_size=64, use_rope=True, rope_residual=True,
                       with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        out = model(x)[0]
        out.square().mean().backward()
        grads.append((out.detach(), model.layers[0].mixer.A_b_log.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_cls_token_output_is_the_normed_middle_token():
    model = Vim(arch=SMALL, img_size=64, out_type='cls_token').eval()
    captured = {}
    model.norm_f.register_forward_hook(lambda m, i, o: captured.update(out=o))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (feature, ) = model(x)
    assert feature.shape == (2, 16) and captured['out'].shape == (2, 17, 16)
    torch.testing.assert_close(feature, captured['out'][:, 8], rtol=0, atol=0)


@pytest.mark.parametrize('kwargs', [dict(), dict(with_fpn=True, out_indices=(0, 1, 2)),
                                    dict(out_type='cls_token')])
def test_empty_batch_gives_empty_outputs(kwargs):
    """Batch 0 (e.g. a sampler's empty last batch) returns empty outputs of the usual
    shapes, as in the other families, instead of failing in the token-to-map reshape."""
    model = Vim(arch=SMALL, img_size=32, **kwargs)
    full = model(torch.randn(1, 3, 32, 32))
    x = torch.zeros(0, 3, 32, 32, requires_grad=True)
    empty = model(x)
    assert [o.shape[1:] for o in empty] == [o.shape[1:] for o in full]
    assert all(o.shape[0] == 0 for o in empty)
    sum(o.sum() for o in empty).backward()
    assert x.grad.shape == x.shape


def test_registry_and_arch_dict():
    from mmengine.registry import MODELS as ROOT
    model = ROOT.build(dict(type='mmssm.Vim', arch=SMALL, img_size=32))
    assert isinstance(model, Vim) and model.arch['dt_rank'] == 'auto'
    assert model.layers[0].mixer.dt_rank == 1  # ceil(16 / 16)
    assert isinstance(ROOT.build(dict(type='mmssm.SimpleFPN', in_channels=16)), SimpleFPN)


# ------------------------------------------------------------------------------------
# SimpleFPN
# ------------------------------------------------------------------------------------
def test_simple_fpn_shapes_norms_and_errors():
    x = torch.randn(2, 32, 8, 12)
    for norm_cfg in (dict(type='LN'), dict(type='BN'), dict(type='GN', num_groups=4), None):
        neck = SimpleFPN(32, 16, norm_cfg=norm_cfg)
        outs = neck((torch.randn(2, 32, 4, 4), x))  # the last backbone output is used
        assert [tuple(o.shape) for o in outs] == [(2, 16, 32, 48), (2, 16, 16, 24),
                                                  (2, 16, 8, 12), (2, 16, 4, 6), (2, 16, 2, 3)]
    assert neck.output_strides(16) == [4, 8, 16, 32, 64]
    neck = SimpleFPN(32, 16, scale_factors=(2, 1, 0.5, 0.25), num_outs=4)
    assert [o.shape[-1] for o in neck(x)] == [24, 12, 6, 3]
    with pytest.raises(ValueError, match=r'expects \(B, 32, H, W\)'):
        neck(torch.randn(2, 16, 8, 8))
    with pytest.raises(ValueError, match='divisible by 4'):
        SimpleFPN(30, 16)
    with pytest.raises(ValueError, match='scale_factors'):
        SimpleFPN(32, 16, scale_factors=(3, 1))
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFPN(32, 16, num_outs=2)
    with pytest.raises(ValueError, match='norm_cfg type'):
        SimpleFPN(32, 16, norm_cfg=dict(type='IN'))


# ------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------
def test_bad_input_and_arguments():
    model = Vim(arch=SMALL, img_size=32).eval()
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\).*\(1, 4, 32, 32\)'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match='smaller than one 16x16 patch'):
        model(torch.randn(1, 3, 32, 8))
    with pytest.raises(ValueError, match="unknown arch 'huge'.*tiny"):
        Vim(arch='huge')
    with pytest.raises(ValueError, match='missing keys'):
        Vim(arch=dict(embed_dims=16))
    with pytest.raises(ValueError, match='strictly increasing'):
        Vim(arch=SMALL, out_indices=(2, 1))
    with pytest.raises(ValueError, match='out of range'):
        Vim(arch=SMALL, out_indices=(3, ))
    with pytest.raises(ValueError, match='cls_token'):
        Vim(arch=SMALL, with_cls_token=False, out_type='cls_token')
    with pytest.raises(ValueError, match='fpn_scales'):
        Vim(arch=SMALL, with_fpn=True, fpn_scales=(8, 4, 2, 1))
    with pytest.raises(ValueError, match='embed_dims divisible by 4'):
        Vim(arch=dict(embed_dims=18, depth=1), use_rope=True)
    with pytest.raises(TypeError):
        Vim(arch=SMALL, window_size=7)  # strict signature


@pytest.mark.parametrize('name', ['vmamba_tiny_s1l8', 'mobilemamba_t2', 'msvmamba_tiny'])
def test_other_family_checkpoint_is_rejected(name):
    other = meta_state_dict_for(name)
    assert not converter.signature(other)
    with pytest.raises(ValueError, match='vim'):
        convert_official('vim', other)


def meta_state_dict_for(name: str) -> OrderedDict:
    return OrderedDict((k, torch.empty(shape, device='meta'))
                       for k, shape in parse_keys_tsv(keys_tsv(name)).items())


def test_unsupported_official_checkpoint_variants():
    sd = OrderedDict(meta_state_dict('tiny'))
    with pytest.raises(NotImplementedError, match='double class token'):
        convert_official('vim', dict(sd, cls_token_head=torch.empty(1, 1, 192)))
    v1 = OrderedDict((k, v) for k, v in sd.items() if '_b.' not in k)
    with pytest.raises(NotImplementedError, match='bimamba v1'):
        convert_official('vim', v1)
    # a checkpoint whose pos_embed fits neither this grid nor a square one
    model = Vim(arch=SMALL, img_size=64)
    with pytest.raises(ValueError, match='square'):
        model.adapt_state_dict({'pos_embed': torch.zeros(1, 13, 16),
                                'cls_token': torch.zeros(1, 1, 16)})


def test_mixer_reuses_stacked_parameters_until_one_changes():
    """Inference reuses the stacked per-direction parameters; an optimizer step, a
    load_state_dict, a dtype change or a grad-enabled forward never sees stale ones."""
    from mmssm.models.backbones.vim import BiMambaMixer
    torch.manual_seed(0)
    mixer = BiMambaMixer(8, d_state=4).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        first = mixer.route_parameters()
        assert mixer.route_parameters() is first  # reused
        y0 = mixer(x)
    opt = torch.optim.SGD(mixer.parameters(), lr=0.5)
    mixer(x).square().sum().backward()  # grad enabled: built in the graph, not cached
    assert mixer.__dict__.get('_route_parameters') is None
    assert all(p.grad is not None for p in (mixer.x_proj_b.weight, mixer.A_b_log, mixer.D_b))
    opt.step()
    with torch.no_grad():
        stepped = mixer.route_parameters()
        assert stepped is not first
        assert torch.equal(stepped[2], torch.stack([mixer.x_proj.weight,
                                                    mixer.x_proj_b.weight]))
        y1 = mixer(x)
    assert not torch.allclose(y0, y1)
    fresh = BiMambaMixer(8, d_state=4).eval()
    with torch.no_grad():
        fresh(x)
        fresh.load_state_dict(mixer.state_dict())
        assert torch.equal(fresh(x), y1)
        fresh.double()
        assert fresh.route_parameters()[5].dtype == torch.float64
        assert torch.allclose(fresh(x.double()), y1.double(), atol=1e-5)


def test_mixer_drops_stacked_parameters_on_module_conversion():
    """A dtype / device round trip (half() then float()) replaces every parameter's
    data, possibly at a freed address with version 0 -- a match for the cache key of the
    original tensor. The conversion itself drops the cache, so the stacked copy of the
    unrounded fp32 values is never reused for the half-rounded ones."""
    from mmssm.models.backbones.vim import BiMambaMixer
    torch.manual_seed(0)
    mixer = BiMambaMixer(8, d_state=4).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(1e-3)  # values that half() rounds
        mixer(x)
        assert mixer.__dict__.get('_route_parameters') is not None
        mixer.half()
        assert '_route_parameters' not in mixer.__dict__
        mixer(x.half())
        mixer.float()
        assert '_route_parameters' not in mixer.__dict__
        rounded = mixer.route_parameters()
        assert torch.equal(rounded[2], torch.stack([mixer.x_proj.weight,
                                                    mixer.x_proj_b.weight]))
        fresh = BiMambaMixer(8, d_state=4).eval()
        fresh.load_state_dict(mixer.state_dict())
        assert torch.equal(mixer(x), fresh(x))


def test_mixer_reads_computed_direction_parameters():
    """A parametrized weight (not in its module's parameter dict) is read by attribute,
    in inference and training, and a change of the underlying parameter is seen: with a
    computed parameter nothing is cached (a fresh tensor per read can reuse the last
    one's address and version, which a cache key would take for the same tensor)."""
    import torch.nn.utils.parametrize as parametrize
    from mmssm.models.backbones.vim import BiMambaMixer

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    torch.manual_seed(0)
    mixer = BiMambaMixer(8, d_state=4).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        plain = mixer(x)
        parametrize.register_parametrization(mixer.x_proj_b, 'weight', Doubled())
        stacked = mixer.route_parameters()
        assert torch.equal(stacked[2][1], 2 * mixer.x_proj_b.parametrizations.weight.original)
        assert mixer.__dict__.get('_route_parameters') is None  # not cached
        doubled = mixer(x)
        assert not torch.allclose(plain, doubled)
        mixer.x_proj_b.parametrizations.weight.original.mul_(0.5)  # back to the plain one
        assert torch.allclose(mixer(x), plain, atol=1e-6)
    mixer.train()
    mixer(x).sum().backward()
    assert mixer.x_proj_b.parametrizations.weight.original.grad is not None
