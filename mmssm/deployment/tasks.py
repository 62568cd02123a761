"""Config-level deployment: build a task model (mmdet / mmseg / mmpretrain) with its
checkpoint, turn an image into the exported graph's input, and finish the graph's
outputs with the library's own post-processing.

What runs where (``part`` stored in the file, see :func:`mmssm.deployment.default_part`):

=====================================  =================  ===============================
model                                  in the ONNX graph  in PyTorch (mmdet/mmseg/mmpretrain)
=====================================  =================  ===============================
segmentor (EncoderDecoder)             backbone, neck,    ``decode_head.predict_by_feat``
                                       decode head        (resize), whole/slide inference,
                                                          ``postprocess_result``
single-stage detector (RetinaNet,      backbone, neck,    ``bbox_head.predict_by_feat``
SSD)                                   raw head outputs   (decode, NMS, rescale)
two-stage / cascade detector           backbone, neck     ``rpn_head.predict``,
(Mask R-CNN, Cascade Mask R-CNN)                          ``roi_head.predict``
classifier (ImageClassifier)           everything         ``head._get_predictions``
                                       (logits)           (softmax, top-k)
=====================================  =================  ===============================
"""
import contextlib
import copy
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from .onnx_export import default_part, unflatten_outputs

Tensor = torch.Tensor


def load_checkpoint_strict(model: nn.Module, path: str, trust_pickle: bool = False) -> None:
    """Load an mmengine/mmssm checkpoint into ``model``; every key must match.

    The file is read by mmssm's safe loader (no arbitrary unpickling unless
    ``trust_pickle``); missing, unexpected or mis-shaped entries raise a ValueError that
    lists them, so a checkpoint of another config never half-loads.
    """
    from mmssm.converters.checkpoint import extract_state_dict
    from mmssm.fileio import load_checkpoint_file, preview
    state_dict = extract_state_dict(load_checkpoint_file(path, trust_pickle=trust_pickle))
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches raise even when not strict
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ValueError(f'checkpoint {path!r} does not fit the model '
                         f'{type(model).__name__} of this config: '
                         f'{"; ".join(lines[1:6])[:1500]}') from err
    problems = []
    if result.unexpected_keys:
        problems.append(f'{len(result.unexpected_keys)} unexpected key(s): '
                        f'{preview(result.unexpected_keys)}')
    if result.missing_keys:
        problems.append(f'{len(result.missing_keys)} missing key(s): '
                        f'{preview(result.missing_keys)}')
    if problems:
        raise ValueError(f'checkpoint {path!r} does not fit the model '
                         f'{type(model).__name__} of this config: {"; ".join(problems)}')


def build_model(config: str, checkpoint: Optional[str] = None,
                cfg_options: Optional[dict] = None,
                trust_pickle: bool = False) -> Tuple[nn.Module, Any, str]:
    """(model, cfg, scope): the config's model on the CPU in eval mode, SyncBN turned
    into BN, no pretrained download (``init_cfg`` is not run), and the checkpoint
    loaded strictly if given."""
    from mmengine.model import revert_sync_batchnorm
    from mmssm.apis.analysis import build_task_model
    model, cfg, scope = build_task_model(config, cfg_options)
    model = revert_sync_batchnorm(model).cpu().eval()
    if checkpoint:
        load_checkpoint_strict(model, checkpoint, trust_pickle)
        model.eval()
    return model, cfg, scope


# ------------------------------------------------------------------ images
def test_pipeline_cfg(cfg) -> List[dict]:
    """The config's test pipeline without annotation loading (inference on a bare
    image)."""
    pipeline = cfg.get('test_pipeline')
    if pipeline is None:
        try:
            pipeline = cfg.test_dataloader.dataset.pipeline
        except AttributeError as err:
            raise ValueError('the config has neither test_pipeline nor '
                             'test_dataloader.dataset.pipeline') from err
    return [copy.deepcopy(t) for t in pipeline
            if not str(t.get('type', '')).split('.')[-1] == 'LoadAnnotations']


def preprocess_image(model: nn.Module, cfg, scope: str, image: str) -> Dict[str, Any]:
    """Run the config's test pipeline and the model's data preprocessor on ``image``
    (a file path): ``{'inputs': (1, 3, H, W) float32, 'data_samples': [...]}``."""
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    pipeline = Compose(test_pipeline_cfg(cfg))
    sample = pipeline(dict(img_path=image, img_id=0))
    with torch.no_grad():
        return model.data_preprocessor(pseudo_collate([sample]), False)


# ------------------------------------------------------------------ post-processing
@contextlib.contextmanager
def _instance_override(obj: Any, name: str, fn: Callable) -> Iterator[None]:
    setattr(obj, name, fn)
    try:
        yield
    finally:
        delattr(obj, name)


def predict_with_outputs(model: nn.Module, part: str, structure: Any,
                         run: Callable[[Tensor], List[np.ndarray]], inputs: Tensor,
                         data_samples: list) -> list:
    """Predictions (data samples) of ``model``'s task with its graph part replaced by
    ``run`` (an exported file's session: inputs -> flat list of arrays).

    The library's own code does everything else, so the results are those of
    ``model.predict`` / ``tools/test.py`` up to the graph's float32 rounding.
    """
    def graph(batch: Tensor):
        flat = [torch.from_numpy(np.asarray(a)) for a in run(batch)]
        return unflatten_outputs(flat, structure)

    metas = [s.metainfo for s in data_samples]
    kind = task_kind(model)
    with torch.no_grad():
        if kind == 'segmentor':
            if part != 'tensor':
                raise ValueError(f'a segmentor file must hold part \'tensor\', not {part!r}')

            def encode_decode(batch, batch_img_metas):
                return model.decode_head.predict_by_feat(graph(batch), batch_img_metas)

            with _instance_override(model, 'encode_decode', encode_decode):
                return model.predict(inputs, data_samples)
        if kind == 'two_stage':
            if part != 'features':
                raise ValueError(f'a two-stage detector file must hold part \'features\' '
                                 f'(backbone + neck), not {part!r}')
            with _instance_override(model, 'extract_feat', lambda batch: tuple(graph(batch))):
                return model.predict(inputs, data_samples)
        if kind == 'single_stage':
            if part == 'features':
                with _instance_override(model, 'extract_feat',
                                        lambda batch: tuple(graph(batch))):
                    return model.predict(inputs, data_samples)
            outs = graph(inputs)
            results = model.bbox_head.predict_by_feat(*outs, batch_img_metas=metas,
                                                      rescale=True)
            return model.add_pred_to_datasample(data_samples, results)
        if kind == 'classifier':
            logits = graph(inputs)
            if part != 'tensor' or not isinstance(logits, Tensor):
                raise ValueError('a classifier file must hold part \'tensor\' (logits)')
            return model.head._get_predictions(logits, data_samples)
    raise ValueError(f'no post-processing for {type(model).__name__}: mmssm deploys '
                     'mmseg EncoderDecoder segmentors, mmdet single-/two-stage detectors '
                     'and mmpretrain ImageClassifier models')


def task_kind(model: nn.Module) -> str:
    """'segmentor', 'single_stage', 'two_stage', 'classifier' or 'other'."""
    checks = (
        ('mmdet.models.detectors', 'TwoStageDetector', 'two_stage'),
        ('mmdet.models.detectors', 'SingleStageDetector', 'single_stage'),
        ('mmseg.models.segmentors', 'EncoderDecoder', 'segmentor'),
        ('mmpretrain.models.classifiers', 'ImageClassifier', 'classifier'),
    )
    import importlib
    for module, name, kind in checks:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(model, cls):
            return kind
    return 'other'


__all__ = ['build_model', 'default_part', 'load_checkpoint_strict', 'predict_with_outputs',
           'preprocess_image', 'task_kind', 'test_pipeline_cfg']
