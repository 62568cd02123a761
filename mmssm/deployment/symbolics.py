"""ONNX symbolics that mmssm installs for the duration of an export.

Only what torch's TorchScript-based exporter cannot lower for *dynamic* input sizes:

* ``aten::adaptive_avg_pool2d`` (the pyramid pooling of UPerHead/PSPHead, pool scales
  1, 2, 3, 6): torch maps it to a fixed-kernel ``AveragePool``, which needs the input
  size at export time and is wrong when the size is not a multiple of the output size.
  Here it becomes two averaging matrices built from the runtime size with the bins of
  PyTorch (bin ``i`` of ``o`` over ``n`` covers ``[floor(i n / o), ceil((i + 1) n / o))``)
  and two ``MatMul``: standard operators, exact for every input size.

* ``aten::einsum`` of a batched matrix product (``'bkel,kce->bkcl'``: the projections
  of SS2D and Vim): torch emits ONNX ``Einsum``, which ONNX Runtime runs far slower than
  ``MatMul`` (23% of a VMamba-T graph at 512 x 512, measured). Here an equation whose
  output ends in ``(m, n)``, one operand in ``(m, c)``, the other in ``(c, n)`` (or their
  transposes), one contracted letter ``c`` and leading letters that appear in the output
  in its order becomes Unsqueeze/Transpose + one broadcasting ``MatMul``; every other
  equation stays ``Einsum``.

The symbolics are registered by :func:`export_symbolics` and removed afterwards, so they
never change torch's behaviour outside an mmssm export.
"""
import contextlib
from typing import Iterator

from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

_INT64 = 7  # onnx.TensorProto.INT64
_FLOAT = 1  # onnx.TensorProto.FLOAT


def _const(g, value):
    import torch
    return g.op('Constant', value_t=torch.tensor(value, dtype=torch.int64))


def _pool_matrix(g, size, bins: int, like):
    """(bins, size) averaging matrix of adaptive pooling, ``size`` a 1-element int64
    tensor from ``Shape``; cast to ``like``'s element type."""
    i = g.op('Range', _const(g, 0), _const(g, bins), _const(g, 1))  # (bins,)
    start = g.op('Div', g.op('Mul', i, size), _const(g, bins))
    end = g.op('Div', g.op('Add', g.op('Mul', g.op('Add', i, _const(g, 1)), size),
                           _const(g, bins - 1)), _const(g, bins))
    j = g.op('Range', _const(g, 0), g.op('Squeeze', size, _const(g, [0])), _const(g, 1))
    start = g.op('Unsqueeze', start, _const(g, [1]))  # (bins, 1)
    end = g.op('Unsqueeze', end, _const(g, [1]))
    inside = g.op('And', g.op('GreaterOrEqual', j, start), g.op('Less', j, end))
    weights = g.op('CastLike', inside, like)
    counts = g.op('CastLike', g.op('Sub', end, start), like)
    return g.op('Div', weights, counts)  # (bins, size)


def adaptive_avg_pool2d(g, x, output_size):
    from torch.onnx import symbolic_helper as sh
    bins = sh._maybe_get_const(output_size, 'is')
    if not isinstance(bins, (list, tuple)) or len(bins) != 2 or None in bins:
        return sh._unimplemented('adaptive_avg_pool2d',
                                 f'output size {bins!r} must be two ints', x)
    out_h, out_w = (int(b) for b in bins)
    if (out_h, out_w) == (1, 1):
        return g.op('GlobalAveragePool', x)
    shape = g.op('Shape', x)
    height = g.op('Slice', shape, _const(g, [2]), _const(g, [3]))
    width = g.op('Slice', shape, _const(g, [3]), _const(g, [4]))
    rows = _pool_matrix(g, height, out_h, x)  # (out_h, H)
    cols = _pool_matrix(g, width, out_w, x)  # (out_w, W)
    y = g.op('MatMul', rows, x)  # (B, C, out_h, W)
    return g.op('MatMul', y, g.op('Transpose', cols, perm_i=[1, 0]))  # (B, C, out_h, out_w)


def matmul_plan(equation: str):
    """How to compute a two-operand einsum as one broadcasting MatMul, or None.

    Returns:
        (left, right, transposes): ``left``/``right`` the operand indices, each with the
        output positions of its leading (batch) letters; the result is
        ``MatMul(L, R)`` where ``L = lhs`` brought to ``(..., m, c)`` and
        ``R = rhs`` to ``(..., c, n)``: ``(operand, batch_positions, transpose_last_two)``
        for each.
    """
    if '.' in equation or '->' not in equation:
        return None
    inputs, output = equation.replace(' ', '').split('->')
    ops = inputs.split(',')
    letters = ops + [output]
    if len(ops) != 2 or any(len(set(t)) != len(t) or len(t) < 2 for t in letters):
        return None
    contracted = (set(ops[0]) & set(ops[1])) - set(output)
    if len(contracted) != 1 or set(output) != (set(ops[0]) | set(ops[1])) - contracted:
        return None
    c = contracted.pop()
    m, n = output[-2], output[-1]
    lead = output[:-2]
    plan = []
    for role, free in (('left', m), ('right', n)):
        found = None
        for i, op in enumerate(ops):
            if set(op[-2:]) == {free, c}:
                found = i
        if found is None:
            return None
        op = ops[found]
        batch = op[:-2]
        positions = [lead.find(ch) for ch in batch]
        if -1 in positions or positions != sorted(positions):
            return None
        wanted = (free, c) if role == 'left' else (c, free)
        plan.append((found, positions, tuple(op[-2:]) != wanted))
    if plan[0][0] == plan[1][0]:
        return None
    return plan[0], plan[1], len(lead)


def einsum(g, equation, tensor_list, path=None):
    from torch.onnx import symbolic_helper as sh
    equation = sh._maybe_get_const(equation, 's')
    tensors = sh._unpack_list(tensor_list)
    plan = matmul_plan(equation) if len(tensors) == 2 else None
    if plan is None:
        return g.op('Einsum', *tensors, equation_s=equation)
    *sides, rank = plan
    operands = []
    for index, positions, transpose in sides:
        x = tensors[index]
        if transpose:
            x = g.op('Transpose', x, perm_i=list(range(len(positions))) +
                     [len(positions) + 1, len(positions)])
        missing = [p for p in range(rank) if p not in positions]
        if missing:  # broadcast over the output's leading letters this operand lacks
            x = g.op('Unsqueeze', x, _const(g, missing))
        operands.append(x)
    return g.op('MatMul', *operands)


_SYMBOLICS = {
    'aten::adaptive_avg_pool2d': adaptive_avg_pool2d,
    'aten::einsum': einsum,
}


@contextlib.contextmanager
def export_symbolics(opset: int) -> Iterator[None]:
    """Install mmssm's symbolics for ``opset`` inside the block."""
    for name, fn in _SYMBOLICS.items():
        register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in _SYMBOLICS:
            unregister_custom_op_symbolic(name, opset)
