"""Deployment: ONNX export with the selective scan lowered to standard operators, and
checks of the exported files in ONNX Runtime / OpenVINO against PyTorch.

    from mmssm.deployment import export_onnx, verify_onnx
    info = export_onnx(model, torch.randn(1, 3, 512, 512), 'model.onnx', dynamic=True)
    rows = verify_onnx(model, 'model.onnx', [torch.randn(1, 3, 512, 512)])

See docs/deployment.md.
"""
from .onnx_export import (DEFAULT_OPSET, PARTS, ExportError, ExportPart, default_part,
                          export_onnx, flatten_outputs, output_names, read_metadata,
                          unflatten_outputs)
from .runtime import (DEFAULT_TOLERANCE, RUNTIMES, RuntimeSession, compare_outputs,
                      custom_op_library, format_rows, verify_onnx)

__all__ = [
    'DEFAULT_OPSET', 'DEFAULT_TOLERANCE', 'PARTS', 'RUNTIMES', 'ExportError', 'ExportPart',
    'RuntimeSession', 'compare_outputs', 'custom_op_library', 'default_part',
    'export_onnx', 'flatten_outputs', 'format_rows', 'output_names', 'read_metadata',
    'unflatten_outputs', 'verify_onnx'
]
