"""Run exported files in ONNX Runtime or OpenVINO and hold them to the PyTorch numbers.

Error measure (per output): ``max_abs = max |ort - torch|`` and
``max_rel = max_abs / max |torch|``, i.e. the largest deviation relative to the output's
scale. An element-wise relative error is not used: logits and regression outputs cross
zero, where it is undefined.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .onnx_export import (INPUT_NAME, ExportPart, default_part, read_metadata,
                          uses_custom_op)

RUNTIMES = ('onnxruntime', 'openvino')
DEFAULT_TOLERANCE = 1e-4


def custom_op_library() -> str:
    """Path of mmssm's ONNX Runtime operator library (``mmssm/_ort_ops*.so``, built
    from csrc/onnxruntime with the C++ CPU kernels; it needs neither torch nor Python
    at run time): pass it to ``SessionOptions.register_custom_ops_library`` to run files
    exported with ``scan_op='custom'``.

    Raises:
        RuntimeError: the library was not built here (says how to build it).
    """
    import importlib.util
    spec = importlib.util.find_spec('mmssm._ort_ops')
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        raise RuntimeError(
            "mmssm's ONNX Runtime operator library (mmssm._ort_ops) is not built here; "
            'build it with `pip install --no-build-isolation -e .` (or `python setup.py '
            "build_ext --inplace`), or export with scan_op='standard' (no custom op)")
    return spec.origin


def file_uses_custom_op(path: str, metadata: Optional[Dict[str, Any]] = None) -> bool:
    """Whether ``path`` needs :func:`custom_op_library` (from its metadata when it has
    mmssm's, else from its nodes)."""
    if metadata and 'scan_op' in metadata:
        return metadata['scan_op'] == 'custom'
    return uses_custom_op(path)


class RuntimeSession:
    """One exported file loaded in ``runtime`` (CPU); ``session(inputs)`` -> list of
    numpy arrays in the file's output order.

    Args:
        path (str): the ``.onnx`` file.
        runtime (str): ``'onnxruntime'`` or ``'openvino'``.
        threads (int, optional): intra-op threads (default: the runtime's own choice).
        spinning (bool): ONNX Runtime only: let idle intra-op threads busy-wait for
            work (its default, fastest on a machine of its own). False makes them
            sleep, as a fair neighbour of other thread pools on the same cores (the
            benchmarks use it: spinning ONNX Runtime threads slowed an interleaved
            PyTorch run up to 2.5x on a 2-core machine).
    """

    def __init__(self, path: str, runtime: str = 'onnxruntime',
                 threads: Optional[int] = None, spinning: bool = True):
        if runtime not in RUNTIMES:
            raise ValueError(f'unknown runtime {runtime!r}; choose one of {RUNTIMES}')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'ONNX file not found: {path!r}')
        self.path = path
        self.runtime = runtime
        self.metadata = read_metadata(path)
        self.custom_op = file_uses_custom_op(path, self.metadata)
        if self.custom_op and runtime != 'onnxruntime':
            raise RuntimeError(
                f'{os.path.basename(path)} uses mmssm\'s ONNX Runtime custom operator '
                f'(mmssm.SelectiveScan), which {runtime} cannot run; export it again '
                "without --scan-op custom (scan_op='standard': standard operators only)")
        if runtime == 'onnxruntime':
            import onnxruntime as ort
            options = ort.SessionOptions()
            if self.custom_op:
                options.register_custom_ops_library(custom_op_library())
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            if threads:
                options.intra_op_num_threads = int(threads)
            if not spinning:
                options.add_session_config_entry('session.intra_op.allow_spinning', '0')
                options.add_session_config_entry('session.inter_op.allow_spinning', '0')
            options.log_severity_level = 3  # errors only
            self._session = ort.InferenceSession(path, options,
                                                 providers=['CPUExecutionProvider'])
            self.input_shape = self._session.get_inputs()[0].shape
        else:
            try:
                import openvino as ov
            except ImportError as err:
                raise RuntimeError(f'runtime openvino is not installed ({err}); '
                                   'pip install openvino (see requirements/deploy.txt)') from err
            self._core = ov.Core()
            self._config = {'INFERENCE_PRECISION_HINT': 'f32'}  # no bf16/f16 downcast
            if threads:
                self._config['INFERENCE_NUM_THREADS'] = int(threads)
            self._model = self._core.read_model(path)
            self.input_shape = [d.get_length() if d.is_static else None
                                for d in self._model.input(0).get_partial_shape()]
            # OpenVINO 2026.4's CPU plugin computes some dynamic-shape graphs of the
            # lowered scan wrongly (garbage, varying from run to run; bisected to an
            # elementwise node whose inputs equal ONNX Runtime's). With every dimension
            # fixed before compiling it is right, so a dynamic file is compiled once
            # per input shape (docs/deployment.md, "OpenVINO").
            self._compiled_by_shape: Dict[tuple, Any] = {}
            if None not in self.input_shape:
                self._compiled_for(tuple(self.input_shape))

    def check_input(self, inputs: np.ndarray) -> None:
        """Raise a ValueError if ``inputs`` does not fit the file's input shape."""
        expected = [d if isinstance(d, int) else None for d in self.input_shape]
        if len(inputs.shape) != len(expected) or any(
                e is not None and e != s for e, s in zip(expected, inputs.shape)):
            shown = tuple(e if e is not None else '?' for e in expected)
            raise ValueError(f'{os.path.basename(self.path)} takes {INPUT_NAME} of shape '
                             f'{shown}, got {tuple(inputs.shape)}; export with --dynamic '
                             'for other sizes')

    def _compiled_for(self, shape: tuple):
        """(compiled model, infer request) of the OpenVINO model for one input shape."""
        if shape not in self._compiled_by_shape:
            model = self._model
            if None in self.input_shape:
                model = self._model.clone()
                model.reshape({0: list(shape)})
            compiled = self._core.compile_model(model, 'CPU', self._config)
            self._compiled_by_shape[shape] = (compiled, compiled.create_infer_request())
        return self._compiled_by_shape[shape]

    def __call__(self, inputs) -> List[np.ndarray]:
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().cpu().numpy()
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        self.check_input(inputs)
        if self.runtime == 'onnxruntime':
            return self._session.run(None, {self._session.get_inputs()[0].name: inputs})
        compiled, request = self._compiled_for(tuple(inputs.shape))
        result = request.infer({0: inputs})
        return [np.asarray(result[out]) for out in compiled.outputs]


def compare_outputs(reference: Sequence[Any], outputs: Sequence[np.ndarray],
                    names: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Per-output ``max_abs`` / ``max_rel`` of ``outputs`` against ``reference``."""
    if len(reference) != len(outputs):
        raise ValueError(f'the file returns {len(outputs)} outputs, PyTorch {len(reference)}')
    rows = []
    for i, (ref, out) in enumerate(zip(reference, outputs)):
        ref = ref.detach().cpu().double().numpy() if isinstance(ref, torch.Tensor) else \
            np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        name = names[i] if names else f'output_{i}'
        if ref.shape != out.shape:
            rows.append(dict(name=name, shape=tuple(ref.shape), max_abs=float('inf'),
                             max_rel=float('inf'),
                             note=f'shape {tuple(out.shape)} != {tuple(ref.shape)}'))
            continue
        if ref.size == 0:
            max_abs, max_rel = 0.0, 0.0
        else:
            max_abs = float(np.max(np.abs(out - ref)))
            scale = float(np.max(np.abs(ref)))
            max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float('inf'))
        if not np.all(np.isfinite(out)):
            max_abs = max_rel = float('inf')
        rows.append(dict(name=name, shape=tuple(ref.shape), max_abs=max_abs, max_rel=max_rel))
    return rows


def verify_onnx(model: nn.Module, path: str, inputs: Sequence[torch.Tensor], *,
                runtime: str = 'onnxruntime', part: Optional[str] = None,
                tolerance: float = DEFAULT_TOLERANCE,
                session: Optional[RuntimeSession] = None) -> List[Dict[str, Any]]:
    """Run ``path`` and ``model`` on every tensor in ``inputs`` and compare.

    Args:
        model: the PyTorch model the file was exported from.
        path: the ``.onnx`` file.
        inputs: input batches (B, 3, H, W); for a static file, of its shape.
        runtime: ``'onnxruntime'`` or ``'openvino'``.
        part: the exported part (default: the file's metadata, else
            :func:`default_part`).
        tolerance: bound on every output's ``max_rel``.
        session: an already-open :class:`RuntimeSession` of ``path``.

    Returns:
        One row per (input, output): ``input_shape``, ``name``, ``shape``, ``max_abs``,
        ``max_rel``, ``ok``.
    """
    session = session or RuntimeSession(path, runtime)
    part = part or session.metadata.get('part') or default_part(model)
    names = session.metadata.get('output_names')
    wrapper = ExportPart(model.cpu().eval(), part).eval()
    rows = []
    for batch in inputs:
        with torch.no_grad():
            reference = wrapper(batch.cpu())
        outputs = session(batch)
        for row in compare_outputs(reference, outputs, names):
            row.update(input_shape=tuple(batch.shape), runtime=session.runtime,
                       ok=bool(row['max_rel'] <= tolerance))
            rows.append(row)
    return rows


def format_rows(rows: Sequence[Dict[str, Any]]) -> str:
    """A plain-text table of :func:`verify_onnx` rows."""
    lines = [f'{"runtime":<12} {"input":<18} {"output":<14} {"shape":<22} '
             f'{"max abs":>10} {"max rel":>10}  ok']
    for r in rows:
        lines.append(f'{r.get("runtime", ""):<12} {str(tuple(r["input_shape"])):<18} '
                     f'{r["name"]:<14} {str(tuple(r["shape"])):<22} {r["max_abs"]:>10.3e} '
                     f'{r["max_rel"]:>10.3e}  {"yes" if r["ok"] else "NO"}'
                     + (f'  ({r["note"]})' if r.get('note') else ''))
    return '\n'.join(lines)
