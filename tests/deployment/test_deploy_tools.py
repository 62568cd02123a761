"""Config-level deployment: pytorch2onnx / onnx_infer on small versions of the shipped
configs; the ONNX path's predictions equal model.predict's (what tools/test.py runs)."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools', 'deployment'))

import onnx_infer  # noqa: E402
import pytorch2onnx  # noqa: E402

from mmssm.deployment import RuntimeSession, read_metadata  # noqa: E402
from mmssm.deployment.tasks import (build_model, predict_with_outputs,  # noqa: E402
                                    preprocess_image)

SMALL_VMAMBA = dict(_delete_=True, depths=(1, 1, 1, 1), dims=8, d_state=1, ssm_ratio=1.0, mlp_ratio=2.0,
                    gated=False, conv_bias=False, patch_embed='v2', downsample='v3')
CASES = {
    'retinanet': ('retinanet_vmamba_t_1x.py', {
        'model.backbone.arch': SMALL_VMAMBA,
        'model.neck.in_channels': [16, 32, 64], 'model.neck.out_channels': 16,
        'model.bbox_head.in_channels': 16, 'model.bbox_head.feat_channels': 16,
        'model.bbox_head.stacked_convs': 1, 'model.test_cfg.score_thr': 0.57}),
    'mask_rcnn': ('mask_rcnn_vmamba_t_1x.py', {
        'model.backbone.arch': SMALL_VMAMBA,
        'model.neck.in_channels': [8, 16, 32, 64], 'model.neck.out_channels': 16,
        'model.rpn_head.in_channels': 16, 'model.rpn_head.feat_channels': 16,
        'model.roi_head.bbox_roi_extractor.out_channels': 16,
        'model.roi_head.bbox_head.in_channels': 16,
        'model.roi_head.bbox_head.fc_out_channels': 32,
        'model.roi_head.mask_roi_extractor.out_channels': 16,
        'model.roi_head.mask_head.in_channels': 16,
        'model.roi_head.mask_head.conv_out_channels': 16, 'model.test_cfg.rcnn.score_thr': 0.5}),
    'upernet': ('upernet_vmamba_t_160k_ade20k.py', {
        'model.backbone.arch': SMALL_VMAMBA,
        'model.decode_head.in_channels': [8, 16, 32, 64], 'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 32, 'model.auxiliary_head.channels': 16}),
}


def _small_config(case, folder) -> str:
    """A config inheriting the shipped one, with a small backbone and heads."""
    base, overrides = CASES[case]
    model = {}
    for key, value in overrides.items():
        node = model
        parts = key.split('.')[1:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    path = osp.join(str(folder), f'small_{case}.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = [{osp.join(REPO, 'configs', base)!r}]\nmodel = {model!r}\n")
    return path


# Random weights, seeded, with the detectors' classifiers re-drawn (std below, zero
# bias) so that their scores spread out, and score_thr (in CASES) set so that a few
# detections remain, well apart from each other and from the threshold: the checks
# below compare predictions, and must not depend on how near-ties fall. Measured for
# SEED 0: RetinaNet 7 detections, Mask R-CNN 5, nearest scores >= 1e-4 apart, while
# the two paths' scores differ by 0 (RetinaNet) and 5e-6 (Mask R-CNN: RoI heads on
# ONNX features).
CLASSIFIER_STD = {'retinanet': 0.01, 'mask_rcnn': 0.3}
SEED = 0


def _checkpoint(config, folder, case) -> str:
    torch.manual_seed(SEED)
    model, _, _ = build_model(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if case in CLASSIFIER_STD and 'cls' in name and 'head' in name:
                if name.endswith('weight'):
                    param.normal_(0, CLASSIFIER_STD[case])
                else:
                    param.zero_()
    path = osp.join(str(folder), 'weights.pth')
    torch.save({'state_dict': model.state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    import mmcv
    path = str(tmp_path_factory.mktemp('img') / 'demo.jpg')
    rng = np.random.RandomState(0)
    mmcv.imwrite((rng.rand(96, 128, 3) * 255).astype(np.uint8), path)
    return path


@pytest.mark.parametrize('case', [
    'retinanet', 'upernet',
    pytest.param('mask_rcnn', marks=pytest.mark.slow),  # RoI heads at 800 x 1066 on CPU
])
def test_export_verify_and_infer(case, image, tmp_path, capsys):
    config = _small_config(case, tmp_path)
    weights = _checkpoint(config, tmp_path, case)
    out = str(tmp_path / f'{case}.onnx')
    code = pytorch2onnx.main([config, '--checkpoint', weights, '--shape', '64', '96',
                              '--dynamic', '--out', out, '--verify',
                              '--verify-shape', '96', '128'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'all outputs within max relative error 0.0001' in printed
    meta = read_metadata(out)
    assert meta['part'] == ('features' if case == 'mask_rcnn' else 'tensor')

    # The ONNX path's predictions equal model.predict's on the same preprocessed image.
    model, cfg, scope = build_model(config, weights)
    data = preprocess_image(model, cfg, scope, image)
    with torch.no_grad():
        expected = model.predict(data['inputs'], [s.clone() for s in data['data_samples']])
    got = predict_with_outputs(model, meta['part'], meta['structure'], RuntimeSession(out),
                               data['inputs'], [s.clone() for s in data['data_samples']])
    if case == 'upernet':
        a, b = got[0].seg_logits.data, expected[0].seg_logits.data
        assert float((a - b).abs().max() / b.abs().max()) < 1e-4
        assert (got[0].pred_sem_seg.data == expected[0].pred_sem_seg.data).float().mean() > 0.999
    else:
        a, b = got[0].pred_instances, expected[0].pred_instances
        assert len(a) == len(b) > 0
        # the comparison is meaningful: no two kept scores (nor score_thr) so close that
        # the ONNX path's rounding (<= 1e-5) could reorder them or move one across
        score_thr = cfg.model.test_cfg.get('rcnn', cfg.model.test_cfg).get('score_thr', 0)
        scores = torch.cat([b.scores, b.scores.new_tensor([score_thr])]).sort().values
        assert float(scores.diff().min()) > 5e-5, 'near-tied scores: change SEED or score_thr'
        assert torch.allclose(a.scores.sort().values, b.scores.sort().values, atol=1e-4)
        # every detection is found again (same label, box within 0.01 px); near-ties
        # of scores may only change the order
        for box, label in zip(b.bboxes, b.labels):
            same = (a.labels == label) & ((a.bboxes - box).abs().max(1).values < 1e-2)
            assert bool(same.any()), (box, label)
        if 'masks' in b:  # scores are apart: the same order on both paths
            ia, ib = a.scores.argsort(), b.scores.argsort()
            assert (a.masks[ia] == b.masks[ib]).float().mean() > 0.999

    vis = str(tmp_path / 'vis.png')
    code = onnx_infer.main([config, out, image, '--checkpoint', weights, '--out', vis,
                            '--score-thr', '0'])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert osp.isfile(vis)
    assert ('detections' in printed.out) or ('largest classes' in printed.out)


def test_checkpoint_must_fit_the_config(tmp_path, capsys):
    config = _small_config('upernet', tmp_path)
    bad = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': {'backbone.unknown.weight': torch.zeros(1)}}, bad)
    code = pytorch2onnx.main([config, '--checkpoint', bad, '--shape', '64',
                              '--out', str(tmp_path / 'x.onnx')])
    err = capsys.readouterr().err
    assert code == 2
    assert 'does not fit the model' in err and 'backbone.unknown.weight' in err
    assert not osp.exists(str(tmp_path / 'x.onnx'))


def test_onnx_infer_rejects_a_foreign_file(tmp_path, image, capsys):
    import torch.nn as nn
    from mmssm.deployment import export_onnx
    path = str(tmp_path / 'conv.onnx')
    export_onnx(nn.Conv2d(3, 4, 3), torch.randn(1, 3, 32, 32), path)
    code = onnx_infer.main([_small_config('upernet', tmp_path), path, image])
    assert code == 2
    assert 'holds a Conv2d' in capsys.readouterr().err


def test_custom_scan_op_export_verify_and_infer(tmp_path, image, capsys):
    """--scan-op custom: the scans as mmssm.SelectiveScan nodes, verified in ONNX
    Runtime (with mmssm's operator library) and refused by OpenVINO with the reason."""
    config = _small_config('upernet', tmp_path)
    weights = _checkpoint(config, tmp_path, 'upernet')
    out = str(tmp_path / 'upernet_op.onnx')
    code = pytorch2onnx.main([config, '--checkpoint', weights, '--shape', '64', '96',
                              '--dynamic', '--scan-op', 'custom', '--out', out, '--verify',
                              '--verify-shape', '96', '64'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'scans as mmssm.SelectiveScan nodes' in printed
    assert 'all outputs within max relative error 0.0001' in printed
    assert read_metadata(out)['scan_op'] == 'custom'
    code = onnx_infer.main([config, out, image, '--checkpoint', weights])
    assert code == 0, capsys.readouterr().err
    code = pytorch2onnx.main([config, '--checkpoint', weights, '--shape', '64',
                              '--scan-op', 'custom', '--out', out, '--verify',
                              '--runtime', 'openvino'])
    err = capsys.readouterr().err
    assert code == 2 and 'openvino cannot run' in err and '--scan-op custom' in err
