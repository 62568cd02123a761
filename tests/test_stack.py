"""The pinned OpenMMLab stack works on this torch/numpy/setuptools, with mmssm's shims.

Proof by use: stock mmdet Mask R-CNN and mmseg UperNet configs (inherited through
``mmdet::``/``mmseg::``) build on CPU and give finite training losses; an mmpretrain
classifier builds without torchvision; a ``mmssm.``-scoped type resolves from mmdet's and
mmseg's default scopes; mmpretrain's data pipelines run without torchvision; a full
Runner checkpoint saved by mmengine loads back on torch
2.13. Each shim of ``mmssm.compat`` has a test that fails without it.
"""
import sys
import textwrap
import uuid

import numpy as np
import pytest
import torch
from torch import nn

import mmssm
from mmssm import compat

mmcv = pytest.importorskip('mmcv')  # the stack is installed by `make test`
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.structures import InstanceData, PixelData  # noqa: E402


def _write_config(tmp_path, text):
    path = tmp_path / f'cfg_{uuid.uuid4().hex[:8]}.py'
    path.write_text(textwrap.dedent(text))
    return str(path)


def _finite_total(model, losses):
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            assert torch.isfinite(v).all(), f'loss {name} is not finite: {v}'
    total, log_vars = model.parse_losses(losses)
    assert torch.isfinite(total) and total.item() > 0, log_vars
    return total


# --------------------------------------------------------------------------- imports
def test_versions_and_imports():
    import mmdet
    import mmdet.apis  # noqa: F401  (reaches mmcv.ops through the evaluation chain)
    import mmengine
    import mmpretrain
    import mmpretrain.models  # noqa: F401  (needs the torchvision placeholder shim)
    import mmseg
    import mmseg.apis  # noqa: F401
    import mmseg.utils  # noqa: F401  (tokenizer: ftfy, regex)
    from mmcv.ops import RoIAlign, nms  # noqa: F401  (compiled ops present)

    assert torch.__version__.split('+')[0] == '2.13.0'
    assert mmengine.__version__ == '0.10.7'
    assert mmcv.__version__ == '2.1.0'
    assert mmdet.__version__ == '3.3.0'
    assert mmseg.__version__ == '1.2.2'
    assert mmpretrain.__version__ == '1.2.0'


def test_compat_is_idempotent():
    before = list(sys.meta_path)
    compat.apply()
    compat.apply()
    assert sys.meta_path == before
    assert sum(getattr(f, '_mmssm_compat_finder', False) for f in sys.meta_path) == 1
    import mmengine.runner.checkpoint as ckpt
    view = ckpt.torch
    compat.apply()
    assert ckpt.torch is view  # not wrapped twice
    assert 'weights_only' in compat.applied()['mmengine.runner.checkpoint']


def test_install_doc_lists_every_shim_with_an_existing_test():
    """docs/install.md's shim table names each shim of compat.SHIMS once, with its
    upstream issue and tests that exist (the shim count stays honest)."""
    import os.path as osp
    import re
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    with open(osp.join(root, 'docs', 'install.md')) as f:
        text = f.read()
    section = text.split('## Compatibility shims (`mmssm/compat.py`)')[1].split('\n## ')[0]
    rows = [line.split(' | ') for line in section.splitlines()
            if line.startswith('| `') and not line.startswith('|---')]
    documented = [re.fullmatch(r'\| `(\w+)`', row[0]).group(1) for row in rows]
    assert sorted(documented) == sorted({shim.name for shim in compat.SHIMS})
    for row in rows:
        assert len(row) == 5 and row[2].strip(), row[0]  # upstream issue column filled
        # `tests/FILE.py`, `tests/FILE.py::name`, and `::name` for the file named before
        refs = re.findall(r'`(tests/[\w/]+\.py)?(?:::(\w+))?\*?`', row[4])
        assert refs and refs[0][0], f'{row[0]}: no test file named'
        for path, name in refs:
            if path:
                with open(osp.join(root, path)) as f:
                    source = f.read()
            if name:
                assert f'def {name}' in source, f'{row[0]}: {path}::{name} not found'


# --------------------------------------------------------------------------- mmdet
MASK_RCNN = """
    _base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
    # no download: the torchvision:// weights are not needed to prove the stack runs
    model = dict(backbone=dict(init_cfg=None))
"""


def _det_batch(num_images=2, size=(96, 128), num_boxes=3):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    h, w = size
    inputs, samples = [], []
    for _ in range(num_images):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        xy = torch.rand(num_boxes, 2) * torch.tensor([w / 2, h / 2])
        wh = 8 + torch.rand(num_boxes, 2) * torch.tensor([w / 2 - 8, h / 2 - 8])
        boxes = torch.cat([xy, xy + wh], dim=1)
        masks = np.zeros((num_boxes, h, w), dtype=np.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.randint(0, 80, (num_boxes,)),
            masks=BitmapMasks(masks, h, w))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_mmdet_mask_rcnn_builds_and_trains_one_step(tmp_path):
    from mmdet.registry import MODELS as DET_MODELS
    cfg = Config.fromfile(_write_config(tmp_path, MASK_RCNN))
    assert cfg.model.type == 'MaskRCNN' and cfg.model.backbone.init_cfg is None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = DET_MODELS.build(cfg.model)
    model.train()
    data = model.data_preprocessor(_det_batch(), training=True)
    losses = model(**data, mode='loss')
    for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert key in losses, sorted(losses)
    total = _finite_total(model, losses)
    total.backward()
    grad = model.roi_head.mask_head.conv_logits.weight.grad
    assert grad is not None and torch.isfinite(grad).all()


# --------------------------------------------------------------------------- mmseg
UPERNET = """
    _base_ = 'mmseg::_base_/models/upernet_r50.py'
    norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group
    model = dict(
        pretrained=None,  # no open-mmlab:// download
        data_preprocessor=dict(size=(64, 64)),  # set by mmseg's dataset configs
        backbone=dict(norm_cfg=norm_cfg),
        decode_head=dict(norm_cfg=norm_cfg),
        auxiliary_head=dict(norm_cfg=norm_cfg))
"""


def _seg_batch(num_images=2, size=(64, 64), num_classes=19):
    from mmseg.structures import SegDataSample
    h, w = size
    inputs, samples = [], []
    for _ in range(num_images):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        seg = torch.randint(0, num_classes, (1, h, w))
        seg[:, :4] = 255  # ignored pixels
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=seg)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_mmseg_upernet_builds_and_trains_one_step(tmp_path):
    from mmseg.registry import MODELS as SEG_MODELS
    cfg = Config.fromfile(_write_config(tmp_path, UPERNET))
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = SEG_MODELS.build(cfg.model)
    model.train()
    data = model.data_preprocessor(_seg_batch(), training=True)
    losses = model(**data, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses), sorted(losses)
    _finite_total(model, losses).backward()
    assert torch.isfinite(model.decode_head.conv_seg.weight.grad).all()


# --------------------------------------------------------------------------- mmpretrain
def test_mmpretrain_classifier_builds_without_torchvision():
    from mmpretrain.registry import MODELS as CLS_MODELS
    from mmpretrain.structures import DataSample
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = CLS_MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='ResNet', depth=18, out_indices=(3,)),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=512,
                      loss=dict(type='CrossEntropyLoss'))))
    inputs = torch.randn(2, 3, 32, 32)
    samples = [DataSample().set_gt_label(i) for i in (3, 7)]
    losses = model(inputs, samples, mode='loss')
    assert torch.isfinite(losses['loss'])


def _without_torchvision():
    import importlib.util
    if importlib.util.find_spec('torchvision') is not None:
        pytest.skip('torchvision is installed: the placeholder is not used')


def test_torchvision_placeholder_is_local_and_honest():
    """Without torchvision, mmpretrain's box helpers fail clearly when called, and the
    placeholder does not leak: ``import torchvision`` still fails."""
    from mmpretrain.models.utils import box_utils
    _without_torchvision()
    assert 'torchvision' not in sys.modules
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ImportError, match='needs torchvision'):
        box_utils.box_iou(boxes, boxes)


def test_mmpretrain_data_pipeline_without_torchvision():
    """mmpretrain.datasets imports (formatting/processing hard-import torchvision), the
    ImageNet-style pipeline runs on numpy images, no ``torchvision/*`` transform is
    registered, and the torchvision-backed pieces fail clearly when used."""
    _without_torchvision()
    from mmengine.dataset import Compose
    from mmpretrain.datasets.transforms import MAERandomResizedCrop, PackInputs
    from mmpretrain.registry import TRANSFORMS
    assert 'torchvision' not in sys.modules
    assert not [name for name in TRANSFORMS.module_dict if name.startswith('torchvision/')]
    assert compat.applied()['mmpretrain.datasets.transforms.processing'] == [
        'torchvision_placeholder']
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose([
            dict(type='RandomResizedCrop', scale=32, backend='pillow',
                 interpolation='bicubic'),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='RandAugment', policies='timm_increasing', num_policies=2,
                 total_level=10, magnitude_level=9, magnitude_std=0.5,
                 hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
            dict(type='RandomErasing', erase_prob=1.0, mode='rand'),
            dict(type='PackInputs'),
        ])
        image = np.random.RandomState(0).randint(0, 255, (40, 48, 3), dtype=np.uint8)
        packed = pipeline(dict(img=image, gt_label=2))
        assert packed['inputs'].shape == (3, 32, 32)
        assert packed['data_samples'].gt_label.tolist() == [2]
        with pytest.raises(KeyError, match='torchvision/RandomResizedCrop'):
            Compose([dict(type='torchvision/RandomResizedCrop', size=32)])
    with pytest.raises(ImportError, match='needs torchvision'):
        MAERandomResizedCrop(32)
    from PIL import Image
    with pytest.raises(ImportError, match='needs torchvision'):
        PackInputs().transform(dict(img=Image.fromarray(image)))


def test_numpy_in1d_restored_for_mmpretrain_retrieval():
    from mmpretrain.evaluation.metrics import RetrievalRecall
    numpy_had_in1d = hasattr(np, 'in1d')
    recall = RetrievalRecall.calculate([[0, 1, 2], [3, 4, 6]], [[1], [5]], topk=(1, 2, 3),
                                       pred_indices=True, target_indices=True)
    # sample 0 hits its target at rank 2, sample 1 never
    assert [float(r) for r in recall] == [0.0, 50.0, 50.0]
    assert hasattr(np, 'in1d') == numpy_had_in1d  # numpy itself is left untouched

def test_ssd_head_predicts():
    """mmdet 3.3.0's SSDHead.predict reads a loss_cls it never builds (mmdetection#11780)."""
    from mmdet.models.dense_heads import SSDHead
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import ConfigDict
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = DET_MODELS.build(dict(
            type='SSDHead', num_classes=3, in_channels=(8, 8), use_depthwise=True,
            anchor_generator=dict(type='SSDAnchorGenerator', scale_major=False,
                                  input_size=64, strides=[16, 32], ratios=[[2], [2]],
                                  min_sizes=[16, 32], max_sizes=[32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            test_cfg=ConfigDict(nms_pre=100, nms=dict(type='nms', iou_threshold=0.45),
                                min_bbox_size=0, score_thr=0.0, max_per_img=10)))
    assert isinstance(head, SSDHead) and head.loss_cls is None
    head.eval()
    feats = (torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2))
    with torch.no_grad():
        results = head.predict(feats, [DetDataSample(metainfo=dict(
            img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1., 1.)))])
    assert len(results) == 1 and results[0].bboxes.shape == (10, 4)
    assert results[0].scores.max() <= 1 and int(results[0].labels.max()) < 3
    assert 'ssd_head_loss_cls' in compat.applied()['mmdet.models.dense_heads.ssd_head']



# --------------------------------------------------------------------------- registry
class _ProbeBackbone(nn.Module):
    """Four strided maps of widths 8/16/32/64 (strides 4..32), like a real backbone."""

    def __init__(self, widths=(8, 16, 32, 64)):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(widths):
            layers.append(nn.Conv2d(c_in, c, 3, stride=4 if i == 0 else 2, padding=1))
            c_in = c
        self.stages = nn.ModuleList(layers)

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return tuple(outs)


@pytest.fixture
def probe_type():
    """A test-only class in mmssm.MODELS under a unique name, removed afterwards."""
    name = f'_StackProbe{uuid.uuid4().hex[:8]}'
    mmssm.MODELS.register_module(name=name, module=_ProbeBackbone)
    try:
        yield f'mmssm.{name}'
    finally:
        mmssm.MODELS._module_dict.pop(name, None)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_mmssm_scope_resolves_from_downstream_scopes(scope, probe_type):
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        module = registry.build(dict(type=probe_type, widths=(4, 8, 16, 32)))
    assert isinstance(module, _ProbeBackbone)
    assert [f.shape[1] for f in module(torch.zeros(1, 3, 64, 64))] == [4, 8, 16, 32]


def test_mmssm_backbone_inside_mmdet_config(tmp_path, probe_type):
    """The plugin pattern of our configs: mmdet:: base, backbone replaced with _delete_."""
    from mmdet.registry import MODELS as DET_MODELS
    cfg = Config.fromfile(_write_config(tmp_path, f"""
        _base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
        model = dict(
            backbone=dict(_delete_=True, type='{probe_type}'),
            neck=dict(in_channels=[8, 16, 32, 64]))
    """))
    # _delete_ dropped every ResNet key of the base
    assert set(cfg.model.backbone) <= {'type', '_scope_'}
    assert cfg.model.backbone.type == probe_type
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = DET_MODELS.build(cfg.model)
    assert isinstance(model.backbone, _ProbeBackbone)
    feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
    assert len(feats) == 5 and all(f.shape[1] == 256 for f in feats)


# --------------------------------------------------------------------------- configs
def test_package_scoped_bases_without_pkg_resources(tmp_path, monkeypatch):
    """setuptools>=82 has no pkg_resources; mmdet::/mmseg:: bases must still resolve."""
    monkeypatch.setitem(sys.modules, 'pkg_resources', None)  # import now raises
    cfg = Config.fromfile(_write_config(tmp_path, """
        _base_ = ['mmdet::_base_/schedules/schedule_1x.py',
                  'mmseg::_base_/models/upernet_r50.py']
    """))
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.train_cfg.max_epochs == 12
    from mmengine.utils import get_installed_path, is_installed
    assert is_installed('mmsegmentation') and not is_installed(f'no_such_{uuid.uuid4().hex}')
    assert get_installed_path('mmsegmentation').endswith('mmseg')


# --------------------------------------------------------------------------- checkpoints
class _TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x, y, mode='tensor'):
        out = self.linear(x).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - y) ** 2).mean())
        return out


class _TinyData(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.full((4,), float(i)), y=torch.tensor(float(i % 3)))


def _runner(work_dir, **kwargs):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Wrapped(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = _TinyModel()

        def forward(self, x, y, mode='tensor'):
            return self.net(x, y, mode)

    settings = dict(
        model=Wrapped(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=_TinyData(), batch_size=4,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmengine',
        # unique: two Runners in one second would otherwise share logger/visualizer
        experiment_name=f'stack_{uuid.uuid4().hex[:8]}')
    return Runner(**{**settings, **kwargs})


def test_runner_checkpoint_round_trip(tmp_path):
    """A full training checkpoint (message_hub HistoryBuffers, numpy scalars, optimizer
    and scheduler state) written by the Runner resumes on torch>=2.6."""
    runner = _runner(tmp_path / 'a')
    runner.train()
    ckpt = tmp_path / 'a' / 'epoch_1.pth'
    assert ckpt.is_file()
    saved = runner.model.state_dict()

    # the file really needs full unpickling: plain torch.load (weights_only default)
    # refuses it, and the shim did not change torch.load for anyone else
    if compat._version(torch.__version__) >= (2, 6):
        with pytest.raises(Exception, match='[Ww]eights only load failed'):
            torch.load(ckpt)

    resumed = _runner(tmp_path / 'b', load_from=str(ckpt), resume=True)
    resumed.load_or_resume()
    assert resumed.epoch == 1 and resumed.iter == 2
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    hub = resumed.message_hub.log_scalars
    assert 'train/loss' in hub and len(hub['train/loss'].data[0]) == 2
    momentum = resumed.optim_wrapper.optimizer.state_dict()['state']
    assert momentum and all('momentum_buffer' in s for s in momentum.values())


class _CrashWhileSaving(Hook):
    """Test hook: the save of epoch ``at`` dies (disk full, kill) before it completes."""

    def __init__(self, at):
        self.at = at

    def before_save_checkpoint(self, runner, checkpoint):
        if checkpoint['meta']['epoch'] == self.at:
            raise OSError(f'simulated crash while saving epoch {self.at}')


def test_checkpoint_hook_deletes_the_old_checkpoint_only_after_the_new_one(tmp_path):
    """compat shims 'atomic_save' + 'checkpoint_order': with max_keep_ckpts=1 a save that
    dies leaves the previous checkpoint and a last_checkpoint that names it."""
    import mmengine.runner
    import mmengine.runner.checkpoint as ckpt
    import mmengine.runner.runner as runner_module
    for module in (ckpt, runner_module, mmengine.runner):
        assert getattr(module.save_checkpoint, '_mmssm_atomic', False), module.__name__
    work_dir = tmp_path / 'w'
    hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1),
                 logger=dict(type='LoggerHook', interval=1))
    runner = _runner(work_dir, train_cfg=dict(by_epoch=True, max_epochs=3),
                     default_hooks=hooks, custom_hooks=[_CrashWhileSaving(at=3)])
    with pytest.raises(OSError, match='simulated crash'):
        runner.train()
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['epoch_2.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'epoch_2.pth')
    assert not list(work_dir.glob('.*.tmp'))
    resumed = _runner(work_dir, resume=True, train_cfg=dict(by_epoch=True, max_epochs=3),
                      default_hooks=hooks)
    resumed.train()
    assert resumed.epoch == 3
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['epoch_3.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'epoch_3.pth')


class _CrashWhileSavingBest(Hook):
    """Test hook: the ``at``-th best-checkpoint save (no optimizer state) dies."""

    def __init__(self, at):
        self.at, self.seen = at, 0

    def before_save_checkpoint(self, runner, checkpoint):
        if 'optimizer' not in checkpoint:
            self.seen += 1
            if self.seen == self.at:
                raise OSError('simulated crash while saving the best checkpoint')


def test_save_best_deletes_the_previous_best_only_after_the_new_one(tmp_path):
    """compat shim 'checkpoint_order': a new best checkpoint whose save dies leaves the
    previous best in place; a completed one replaces it."""
    from mmengine.evaluator import BaseMetric

    class EpochScore(BaseMetric):  # better every epoch: each validation is a new best
        calls = 0

        def process(self, data_batch, data_samples):
            self.results.append(0)

        def compute_metrics(self, results):
            self.calls += 1
            return dict(score=float(self.calls))

    def build(work_dir, crash_at=None):
        hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, save_best='score',
                                     rule='greater'),
                     logger=dict(type='LoggerHook', interval=1))
        return _runner(
            work_dir, train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=1),
            val_dataloader=dict(dataset=_TinyData(), batch_size=4,
                                sampler=dict(type='DefaultSampler', shuffle=False),
                                collate_fn=dict(type='default_collate')),
            val_cfg=dict(), val_evaluator=[EpochScore()], default_hooks=hooks,
            custom_hooks=[_CrashWhileSavingBest(crash_at)] if crash_at else [])

    runner = build(tmp_path / 'crash', crash_at=2)
    with pytest.raises(OSError, match='simulated crash'):
        runner.train()
    best = [p.name for p in (tmp_path / 'crash').glob('best_*.pth')]
    assert best == ['best_score_epoch_1.pth']
    runner = build(tmp_path / 'ok')
    runner.train()
    assert [p.name for p in (tmp_path / 'ok').glob('best_*.pth')] == ['best_score_epoch_3.pth']
