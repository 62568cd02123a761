"""Model analysis shared by ``tools/analysis_tools`` (get_flops, benchmark, erf).

* Building what to analyse: a bare mmssm backbone (``build_backbone``, the family
  registry's :func:`mmssm.families.build_backbone`) or a whole
  detector / segmentor / classifier from a config (``build_task_model``), and dummy
  inputs for it (``dummy_batch``) -- built once, no data loading.
* FLOPs with the selective scan counted (``count_flops``). mmengine's ``FlopAnalyzer``
  (fvcore's JIT counter) sees a ``torch.autograd.Function`` as one opaque node
  ``prim::PythonOp.<ClassName>`` and skips it, so without help the scan -- the core of
  every SSM backbone -- counts zero. We register :func:`selective_scan_flop_jit` for it,
  with the count A. Gu gave in state-spaces/mamba#110 that VMamba, MSVMamba and
  EfficientVMamba use for their published numbers::

      9 * B * L * D * N   (+ B * D * L with the D skip)   (+ B * D * L with the z gate)

  for u of shape (B, D, L) and A of shape (D, N). Every other op follows fvcore's
  rules (one multiply-add = one FLOP; element-wise ops such as add, mul, SiLU, exp,
  sigmoid, GELU are free).
* The effective receptive field of a backbone stage (``effective_receptive_field``).

Only mmengine and torch are needed for backbones; configs need their task package.
"""
import ast
import contextlib
import functools
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from mmssm.families import build_backbone
from mmssm.ops.selective_scan import resolve_backend, scan_backend

Tensor = torch.Tensor

SCAN_FORMULA = '9*B*L*D*N (+ B*D*L with the D skip, + B*D*L with the z gate)'
# The compiled op (mmssm.ops.kernels.SelectiveScanFn) and the pure-PyTorch reference
# run as one opaque node while tracing (mmssm.ops.reference.SelectiveScanReference).
SCAN_OP_NAMES = ('prim::PythonOp.SelectiveScanFn', 'prim::PythonOp.SelectiveScanReference')
# Positional arguments of both Functions (the first eight are what the count needs).
_SCAN_ARGS = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
TASK_DEFAULT_SHAPES = {'mmdet': (1280, 800), 'mmseg': (512, 512), 'mmpretrain': (224, 224),
                       'backbone': (224, 224)}


# ------------------------------------------------------------------------ scan FLOPs
def selective_scan_flops(batch: int, dim: int, length: int, d_state: int,
                         with_d: bool = True, with_z: bool = False) -> int:
    """FLOPs of one selective scan: ``9*B*L*D*N`` (+ ``B*D*L`` per D skip / z gate)."""
    flops = 9 * batch * length * dim * d_state
    if with_d:
        flops += batch * dim * length
    if with_z:
        flops += batch * dim * length
    return int(flops)


def _value_shape(value) -> List[int]:
    sizes = value.type().sizes()
    if sizes is None:
        raise ValueError(f'selective-scan FLOPs: input {value.debugName()} has no static '
                         'shape in the trace')
    return list(sizes)


def _scan_arguments(inputs: list, outputs: list) -> Dict[str, Any]:
    """Map the traced node's operands back to the Function's argument names.

    A ``prim::PythonOp`` lists only its tensor operands as inputs; ``None`` and Python
    scalars are kept as "scalar args". Its calling convention string (``cconv``: one
    ``d`` per tensor operand, ``c`` per scalar, in call order) restores positions."""
    node = outputs[0].node()
    if node.kind() != 'prim::PythonOp':
        return dict(zip(_SCAN_ARGS, inputs))
    tensors, scalars = iter(inputs), iter(node.scalar_args())
    args = {}
    for name, kind in zip(_SCAN_ARGS, node.cconv()):
        args[name] = next(tensors) if kind == 'd' else next(scalars)
    return args


def selective_scan_flop_jit(inputs: list, outputs: list) -> int:
    """FlopAnalyzer handle for ``prim::PythonOp.SelectiveScanFn`` (and the traced
    reference): ``9*B*L*D*N`` (+ ``B*D*L`` for D, + ``B*D*L`` for z)."""
    args = _scan_arguments(inputs, outputs)
    batch, dim, length = _value_shape(args['u'])
    d_state = _value_shape(args['A'])[-1]
    present = {name: args.get(name) is not None and hasattr(args.get(name), 'type')
               for name in ('D', 'z')}
    return selective_scan_flops(batch, dim, length, d_state, present['D'], present['z'])


def count_flops(model: nn.Module, inputs: Union[Tensor, Tuple], count_scan: bool = True,
                backend: str = 'auto') -> Dict[str, Any]:
    """Trace ``model(*inputs)`` once and count FLOPs (fvcore rules + the scan handle).

    Args:
        model: the module to trace (its ``forward`` takes ``inputs``).
        inputs: a tensor or a tuple of positional inputs.
        count_scan: register :func:`selective_scan_flop_jit`; without it the scan counts
            zero, as in plain mmengine/fvcore.
        backend: selective-scan backend while tracing ('auto': the compiled one when
            built). Every backend is traced as exactly one node per scan.

    Returns:
        dict with ``flops`` (total), ``scan_flops``, ``scan_calls``, ``by_operator``
        (Counter), ``analyzer`` (the FlopAnalyzer, for tables) and ``backend``.
    """
    from mmengine.analysis import FlopAnalyzer
    if isinstance(inputs, Tensor):
        inputs = (inputs, )
    device = next(iter(model.parameters()), torch.empty(0)).device
    backend = resolve_backend(backend, device, check_available=True)
    calls = {'n': 0}

    def counted(inputs_, outputs_):
        calls['n'] += 1
        return selective_scan_flop_jit(inputs_, outputs_)

    analyzer = FlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    for name in SCAN_OP_NAMES:
        analyzer.set_op_handle(name, counted if count_scan else None)
    with scan_backend(backend, opaque_reference=True), torch.no_grad():
        total = analyzer.total()  # the trace runs here
    by_operator = analyzer.by_operator()
    scan_flops = sum(v for k, v in by_operator.items()
                     if k.startswith('PythonOp.SelectiveScan'))
    return dict(flops=int(total), scan_flops=int(scan_flops), scan_calls=calls['n'],
                by_operator=by_operator, analyzer=analyzer, backend=backend)


def count_params(model: nn.Module) -> int:
    """Parameters as the official repositories count them: every parameter, plus the
    constant buffers an official model keeps as frozen parameters (a module's
    ``official_parameters``, e.g. MobileMamba's Haar filters)."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        for name in getattr(module, 'official_parameters', ()):
            total += getattr(module, name).numel()
    return total


# ------------------------------------------------------------------- model building
def parse_shape(shape: Optional[Sequence[int]], default: Tuple[int, int]) -> Tuple[int, int]:
    """``--shape H W`` (one value: square) -> (H, W)."""
    if not shape:
        return tuple(default)
    if len(shape) == 1:
        return (int(shape[0]), int(shape[0]))
    if len(shape) == 2:
        return (int(shape[0]), int(shape[1]))
    raise ValueError(f'--shape takes H W or a single size, got {list(shape)}')


def parse_arch(text: Optional[str]) -> Optional[Union[str, dict]]:
    """``--arch`` value: a preset name, or a dict literal such as
    ``"{'dims': 32, 'depths': (1, 1, 2, 1)}"``."""
    if text is None:
        return None
    text = text.strip()
    if not text.startswith('{'):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f'--arch: cannot parse {text!r} as a dict literal ({err})') from None
    if not isinstance(value, dict):
        raise ValueError(f'--arch: expected a dict literal, got {type(value).__name__}')
    return value


def build_task_model(config: str, cfg_options: Optional[dict] = None):
    """(model, cfg, scope) for an mmdet / mmseg / mmpretrain config, weights untouched
    (random init, like the FLOPs tools of those libraries)."""
    from mmengine.registry import MODELS, init_default_scope
    from .runner_utils import load_config, task_scope
    cfg = load_config(config, cfg_options)
    scope = task_scope(cfg)
    init_default_scope(scope)
    model = MODELS.build(cfg.model)
    return model, cfg, scope


def config_input_shape(cfg, scope: str) -> Tuple[int, int]:
    """The input size a config evaluates at: a classifier's center crop (its test
    pipeline's ``CenterCrop``; MobileMamba's models run at 192 to 512), else the task
    default of :data:`TASK_DEFAULT_SHAPES`."""
    if scope == 'mmpretrain':
        pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline') or []
        crops = [t['crop_size'] for t in pipeline
                 if isinstance(t, dict) and t.get('type') == 'CenterCrop']
        if crops:
            crop = crops[-1]
            return (crop, crop) if isinstance(crop, int) else (int(crop[1]), int(crop[0]))
    return TASK_DEFAULT_SHAPES[scope]


def dummy_batch(scope: str, shape: Tuple[int, int], batch: int = 1,
                device: Union[str, torch.device] = 'cpu',
                seed: int = 0) -> Tuple[Tensor, Optional[list]]:
    """A normalised random image batch (B, 3, H, W) and matching data samples
    (``None`` for a bare backbone)."""
    height, width = shape
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=generator).to(device)
    if scope == 'backbone':
        return images, None
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                pad_shape=(height, width), batch_input_shape=(height, width),
                scale_factor=(1.0, 1.0), flip=False, img_id=0)
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample as Sample
    elif scope == 'mmseg':
        from mmseg.structures import SegDataSample as Sample
    elif scope == 'mmpretrain':
        from mmpretrain.structures import DataSample as Sample
    else:
        raise ValueError(f'unknown task scope {scope!r}')
    samples = []
    for _ in range(batch):
        sample = Sample()
        sample.set_metainfo(meta)
        samples.append(sample.to(device) if hasattr(sample, 'to') else sample)
    return images, samples


@contextlib.contextmanager
def bound_forward(model: nn.Module, **kwargs) -> Iterator[nn.Module]:
    """Inside the block ``model(inputs)`` calls ``model.forward(inputs, **kwargs)`` (e.g.
    ``data_samples=..., mode='tensor'``); module names stay those of ``model``."""
    if not kwargs:
        yield model
        return
    model.forward = functools.partial(model.forward, **kwargs)
    try:
        yield model
    finally:
        del model.forward


# -------------------------------------------------------- effective receptive field
def effective_receptive_field(backbone: nn.Module, images: Tensor, stage_output: int = -1,
                              batch_size: int = 1) -> np.ndarray:
    """Mean input-gradient map of the central output pixel of one stage.

    For every image x: ``y = backbone(x)[stage_output]`` (B, C, h, w);
    ``s = sum_c relu(y[:, c, h // 2, w // 2])``; the contribution map is
    ``sum_channels relu(ds/dx)`` (H, W). Returns the average over ``images``
    (N, 3, H, W) as float64 (H, W).
    """
    total = None
    was_training = backbone.training
    backbone.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].clone().requires_grad_(True)
            outs = backbone(x)
            feat = outs[stage_output] if isinstance(outs, (list, tuple)) else outs
            if feat.dim() != 4:
                raise ValueError(f'ERF needs NCHW stage outputs, got {tuple(feat.shape)}')
            center = feat[:, :, feat.shape[2] // 2, feat.shape[3] // 2]
            (grad, ) = torch.autograd.grad(torch.relu(center).sum(), x)
            contribution = torch.relu(grad).sum(dim=1).sum(dim=0).double()
            total = contribution if total is None else total + contribution
    finally:
        backbone.train(was_training)
    return (total / images.shape[0]).cpu().numpy()


def log_scaled(erf: np.ndarray, decades: float = 3.0) -> np.ndarray:
    """Contribution map -> [0, 1]: ``log10`` of the max-normalised map over
    ``decades`` orders of magnitude (the papers' log-scaled heatmap)."""
    peak = float(erf.max())
    if peak <= 0:
        return np.zeros_like(erf)
    scaled = np.log10(np.maximum(erf / peak, 10.0**-decades))
    return (scaled + decades) / decades


def high_contribution_area(erf: np.ndarray,
                           thresholds: Sequence[float] = (0.2, 0.3, 0.5, 0.99)
                           ) -> Dict[float, float]:
    """For each t: area ratio (to the whole input) of the smallest centred square
    window holding a fraction t of the total contribution (RepLKNet's ERF metric)."""
    height, width = erf.shape
    total = float(erf.sum())
    cy, cx = height // 2, width // 2
    ratios = {}
    for t in thresholds:
        ratios[t] = 1.0
        if total <= 0:
            continue
        for half in range(0, max(height, width)):
            y0, y1 = max(cy - half, 0), min(cy + half + 1, height)
            x0, x1 = max(cx - half, 0), min(cx + half + 1, width)
            if erf[y0:y1, x0:x1].sum() >= t * total:
                ratios[t] = (y1 - y0) * (x1 - x0) / float(height * width)
                break
    return ratios


def load_images(folder: str, shape: Tuple[int, int], limit: int) -> Tensor:
    """Up to ``limit`` images of ``folder`` (sorted), resized to ``shape`` (H, W) and
    normalised with the ImageNet mean/std, as (N, 3, H, W)."""
    from PIL import Image
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(('.png', '.jpg', '.jpeg', '.bmp')))
    if not names:
        raise FileNotFoundError(f'no .png/.jpg images in {folder!r}')
    mean = np.array([123.675, 116.28, 103.53])
    std = np.array([58.395, 57.12, 57.375])
    batch = []
    for name in names[:limit]:
        image = Image.open(os.path.join(folder, name)).convert('RGB')
        image = image.resize((shape[1], shape[0]), Image.BILINEAR)
        array = (np.asarray(image, dtype=np.float64) - mean) / std
        batch.append(torch.from_numpy(array.transpose(2, 0, 1)).float())
    return torch.stack(batch)


def format_count(value: float, unit: str = '') -> str:
    """1234567 -> '1.235M' (G/M/K)."""
    for scale, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if abs(value) >= scale:
            return f'{value / scale:.3f}{suffix}{unit}'
    return f'{value:.0f}{unit}'


__all__ = ['SCAN_FORMULA', 'SCAN_OP_NAMES', 'selective_scan_flops', 'selective_scan_flop_jit',
           'count_flops', 'count_params', 'build_backbone', 'build_task_model', 'dummy_batch',
           'bound_forward', 'effective_receptive_field', 'log_scaled',
           'high_contribution_area', 'parse_arch', 'parse_shape', 'load_images', 'format_count',
           'scan_backend', 'resolve_backend', 'TASK_DEFAULT_SHAPES']
