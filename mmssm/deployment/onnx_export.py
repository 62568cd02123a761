"""Export any mmssm model, or an OpenMMLab model built on one, to ONNX.

:func:`export_onnx` traces ``part(model)(inputs)`` with torch's TorchScript-based ONNX
exporter (docs/deployment.md says why that one) and writes a file whose graph

* takes one input ``inputs``: the data preprocessor's output, float32 (B, 3, H, W);
* returns the tensors of the exported part, flattened in order (nested lists and tuples
  of mmdet's heads become ``output_0_0``, ``output_0_1``, ...); the nesting is stored in
  the file's metadata (``mmssm.structure``) so :func:`unflatten_outputs` rebuilds it;
* with ``dynamic=True`` has batch, height and width as dynamic axes: the scan-pattern
  index maps, the selective scan's chunking and Vim's position embedding are computed
  in the graph from the runtime size.

The selective scan and the scan-pattern gather/merge lower to standard ONNX operators
(:mod:`mmssm.ops.scan_lowering`), so the file runs in any ONNX runtime without a custom
operator library. Optionally (``scan_op='custom'``) each scan is instead one
``mmssm.SelectiveScan`` node that ONNX Runtime runs with mmssm's C++ kernel
(:func:`mmssm.deployment.custom_op_library`); such a file runs in ONNX Runtime only.
"""
import json
import os
import os.path as osp
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmssm.ops.scan_lowering import (CUSTOM_OP_DOMAIN, CUSTOM_OP_VERSION, SCAN_OP_FORMS,
                                     export_scan_as)
from .symbolics import export_symbolics

Tensor = torch.Tensor

MIN_OPSET = 17  # LayerNormalization (opset 17) keeps the many LayerNorms one node each
DEFAULT_OPSET = 17
INPUT_NAME = 'inputs'
PARTS = ('tensor', 'features', 'forward')
_META_PREFIX = 'mmssm.'


class ExportError(RuntimeError):
    """A model (part) that cannot be exported; the message names it and says why."""


# ------------------------------------------------------------------ nested outputs
def flatten_outputs(outputs: Any) -> Tuple[List[Tensor], Any]:
    """Flatten nested lists/tuples of tensors (depth first) into a list.

    Returns:
        (tensors, structure): ``structure`` is the nesting with every tensor replaced
        by its index in ``tensors`` (JSON-serialisable: ints and lists).
    """
    flat: List[Tensor] = []

    def walk(value, path):
        if isinstance(value, Tensor):
            flat.append(value)
            return len(flat) - 1
        if isinstance(value, (list, tuple)):
            return [walk(v, f'{path}[{i}]') for i, v in enumerate(value)]
        raise ExportError(f'the exported part returns {type(value).__name__} at '
                          f'output{path}; only tensors and (nested) lists/tuples of tensors '
                          'can be graph outputs')

    structure = walk(outputs, '')
    return flat, structure


def unflatten_outputs(flat: Sequence[Any], structure: Any) -> Any:
    """Inverse of :func:`flatten_outputs` (lists become lists, a single tensor stays)."""
    if isinstance(structure, int):
        return flat[structure]
    return [unflatten_outputs(flat, s) for s in structure]


def output_names(structure: Any) -> List[str]:
    """``output`` for a single tensor, else ``output_<i>_<j>...`` in flat order."""
    names: List[Tuple[int, str]] = []

    def walk(s, suffix):
        if isinstance(s, int):
            names.append((s, 'output' + suffix))
        else:
            for i, child in enumerate(s):
                walk(child, f'{suffix}_{i}')

    walk(structure, '')
    return [name for _, name in sorted(names)]


# ------------------------------------------------------------------ parts of a model
def default_part(model: nn.Module) -> str:
    """What to export from ``model``:

    * ``'features'`` (``extract_feat``: backbone + neck) for mmdet's two-stage and
      cascade detectors, whose RoI heads need NMS'ed proposals (data-dependent shapes);
    * ``'tensor'`` (``model(inputs, mode='tensor')``) for every other OpenMMLab model:
      segmentors (logits), single-stage detectors (raw head outputs), classifiers
      (logits);
    * ``'forward'`` (``model(inputs)``) for a bare module such as a backbone.
    """
    try:
        from mmdet.models.detectors import TwoStageDetector
        if isinstance(model, TwoStageDetector):
            return 'features'
    except ImportError:  # mmdet not installed: nothing of it can be exported either
        pass
    from mmengine.model import BaseModel
    return 'tensor' if isinstance(model, BaseModel) else 'forward'


class ExportPart(nn.Module):
    """``model`` seen through one of :data:`PARTS`, returning a flat tuple of tensors."""

    def __init__(self, model: nn.Module, part: str):
        super().__init__()
        if part not in PARTS:
            raise ValueError(f'unknown part {part!r}; choose one of {PARTS}')
        if part == 'features' and not hasattr(model, 'extract_feat'):
            raise ExportError(f'{type(model).__name__} has no extract_feat(): part '
                              "'features' needs an OpenMMLab detector/segmentor/classifier")
        self.model = model
        self.part = part
        self.structure: Any = None

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        if self.part == 'tensor':
            out = self.model(inputs, mode='tensor')
        elif self.part == 'features':
            out = self.model.extract_feat(inputs)
        else:
            out = self.model(inputs)
        flat, self.structure = flatten_outputs(out)
        return tuple(flat)


# ------------------------------------------------------------------ error reporting
class _ModuleTracker:
    """Forward hooks that remember which module was running when tracing failed."""

    def __init__(self, root: nn.Module):
        self.stack: List[str] = []
        self.handles = []
        for name, module in root.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name)))
            self.handles.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name):
        def hook(module, args):
            self.stack.append(f'{name or "<model>"} ({type(module).__name__})')
        return hook

    def _leave(self, name):
        def hook(module, args, output):
            if self.stack:
                self.stack.pop()
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _short_reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    text = text.split('[Caused by the value')[0].strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return f'{type(err).__name__}: {first[:400]}'


def _scope_of(err: BaseException) -> Optional[str]:
    """The module path in a TorchScript exporter error (``scope: A::x/B::y``)."""
    match = re.search(r'scope: (\S+)', str(err))
    if not match:
        return None
    parts = []
    for item in match.group(1).split('/'):
        if '::' in item:
            cls, name = item.split('::', 1)
            parts.append((name, cls.rsplit('.', 1)[-1]))
    names = [name for name, _ in parts[2:]]  # drop the ExportPart wrapper and `model`
    if not parts:
        return None
    return f'{".".join(names) or "<model>"} ({parts[-1][1]})'


def _caller_of(wrapper: nn.Module, inputs: Tensor, op: str) -> Optional[str]:
    """Run ``wrapper`` once and return the innermost module that calls aten ``op``
    (e.g. ``'aten::linalg_eigvals'``), or None."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode
    tracker = _ModuleTracker(wrapper)
    found: List[str] = []
    base = op.split('::')[-1]

    def seen(name: str) -> None:
        if not found and name == base and tracker.stack:
            found.append(tracker.stack[-1])

    class FunctionSpy(TorchFunctionMode):  # torch.linalg.eigvals -> 'linalg_eigvals'
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen(getattr(func, '__name__', ''))
            return func(*args, **(kwargs or {}))

    class DispatchSpy(TorchDispatchMode):  # aten ops reached through other functions
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen(func._schema.name.split('::')[-1])
            return func(*args, **(kwargs or {}))

    try:
        with torch.no_grad(), FunctionSpy(), DispatchSpy():
            wrapper(inputs)
    except Exception:  # noqa: BLE001 - only used to improve an error message
        pass
    finally:
        tracker.remove()
    return found[0] if found else None


# ------------------------------------------------------------------ export
def _dynamic_axes(names: Sequence[str], example: Sequence[Tensor]) -> Dict[str, Dict]:
    axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
    for name, t in zip(names, example):
        dims = {0: 'batch'}
        for d in range(2, t.dim()):
            dims[d] = f'{name}_dim{d}'
        axes[name] = dims
    return axes


def export_onnx(model: nn.Module,
                inputs: Tensor,
                path: str,
                *,
                dynamic: bool = False,
                opset: int = DEFAULT_OPSET,
                part: Optional[str] = None,
                metadata: Optional[Dict[str, Any]] = None,
                scan_op: str = 'standard') -> Dict[str, Any]:
    """Export ``model`` to an ONNX file.

    Args:
        model (nn.Module): an mmssm backbone, or an mmdet/mmseg/mmpretrain model (its
            SyncBN converted to BN; it is put in eval mode and exported on the CPU).
        inputs (Tensor): example input (B, 3, H, W), the data preprocessor's output.
        path (str): output ``.onnx`` file (its directory is created).
        dynamic (bool): batch, height and width dynamic (one file, any size).
        opset (int): ONNX opset, >= 17.
        part (str, optional): ``'tensor'``, ``'features'`` or ``'forward'``; default
            :func:`default_part`.
        metadata (dict, optional): extra entries for the file's metadata (JSON values).
        scan_op (str): ``'standard'`` (default): the scans as standard ONNX operators,
            for every runtime; ``'custom'``: each scan one ``mmssm.SelectiveScan`` node,
            for ONNX Runtime with :func:`~mmssm.deployment.custom_op_library` (faster
            on CPU, docs/deployment.md).

    Returns:
        dict: ``path``, ``part``, ``output_names``, ``structure`` (the nesting of the
        outputs, see :func:`unflatten_outputs`), ``dynamic``, ``opset``, ``scan_op``.

    Raises:
        ExportError: naming the module that cannot be exported and why.
    """
    if opset < MIN_OPSET:
        raise ValueError(f'export_onnx: opset {opset} is too old; mmssm needs >= {MIN_OPSET}')
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f'export_onnx: inputs must be a (B, C, H, W) tensor, got {got}')
    if scan_op not in SCAN_OP_FORMS:
        raise ValueError(f'export_onnx: scan_op must be one of {SCAN_OP_FORMS}, '
                         f'got {scan_op!r}')
    if inputs.dtype != torch.float32:
        raise ValueError(f'export_onnx: inputs must be float32 (the data preprocessor\'s '
                         f'output), got {inputs.dtype}')
    part = part or default_part(model)
    model = model.cpu().eval()
    inputs = inputs.cpu()
    wrapper = ExportPart(model, part).eval()
    with torch.no_grad():
        try:
            example = wrapper(inputs)
        except Exception as err:  # noqa: BLE001 - re-raised with the model's context
            raise ExportError(f'the model does not run on the example input '
                              f'{tuple(inputs.shape)} in PyTorch: {_short_reason(err)}') from err
    structure = wrapper.structure
    names = output_names(structure)
    axes = _dynamic_axes(names, example) if dynamic else None
    out_dir = osp.dirname(osp.abspath(path))
    os.makedirs(out_dir, exist_ok=True)

    tracker = _ModuleTracker(wrapper)
    try:
        with export_symbolics(opset), export_scan_as(scan_op), torch.no_grad(), \
                warnings.catch_warnings():
            # The tracer warns about every Python int it sees; the graphs are checked
            # numerically at several sizes instead (verify_onnx).
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
            warnings.filterwarnings('ignore', category=DeprecationWarning)
            warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX.*')
            torch.onnx.export(wrapper, (inputs, ), path, dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME],
                              output_names=names, dynamic_axes=axes,
                              do_constant_folding=True,
                              custom_opsets=({CUSTOM_OP_DOMAIN: CUSTOM_OP_VERSION}
                                             if scan_op == 'custom' else None))
    except Exception as err:  # noqa: BLE001 - re-raised naming the module
        where = tracker.stack[-1] if tracker.stack else _scope_of(err)
        op = re.search(r"operator '(aten::\w+)'", str(err))
        if where is None and op:  # a conversion error names the op, not the module
            where = _caller_of(wrapper, inputs, op.group(1))
        where = f'{where}' if where else 'the model'
        raise ExportError(f'cannot export {where} (part {part!r} of '
                          f'{type(model).__name__}): {_short_reason(err)}') from err
    finally:
        tracker.remove()

    import onnx
    proto = onnx.load(path)  # once, for the custom-node check and the metadata
    info = dict(part=part, structure=structure, output_names=names, dynamic=bool(dynamic),
                opset=opset, input_shape=list(inputs.shape),
                model_type=type(model).__name__,
                scan_op='custom' if _has_custom_nodes(proto) else 'standard')
    _write_metadata(proto, path, {**info, **(metadata or {})})
    return dict(path=path, **info)


def _write_metadata(proto, path: str, entries: Dict[str, Any]) -> None:
    """Replace the ``mmssm.*`` metadata of ``proto`` by ``entries`` and save it to
    ``path``."""
    import onnx
    kept = [p for p in proto.metadata_props if not p.key.startswith(_META_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key = _META_PREFIX + key
        prop.value = json.dumps(value)
    onnx.save(proto, path)


def _has_custom_nodes(proto) -> bool:
    return any(node.domain == CUSTOM_OP_DOMAIN for node in proto.graph.node)


def uses_custom_op(path: str) -> bool:
    """True if the file has nodes of mmssm's operator domain (``mmssm.SelectiveScan``)."""
    import onnx
    return _has_custom_nodes(onnx.load(path, load_external_data=False))


def read_metadata(path: str) -> Dict[str, Any]:
    """The ``mmssm.*`` metadata of an exported file (empty for other files)."""
    import onnx
    proto = onnx.load(path, load_external_data=False)
    return {p.key[len(_META_PREFIX):]: json.loads(p.value)
            for p in proto.metadata_props if p.key.startswith(_META_PREFIX)}


def parse_input_shape(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``H W`` (or one int for a square) -> (H, W), positive."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f'input shape must be H W (positive), got {value}')
    return value
