"""Multiply-accumulates of the linear operators, one pure function per op.

Each function takes an ONNX ``NodeProto`` and a mapping from tensor name to shape (a tuple of
ints, ``None`` for a dimension that is not known) and returns the node's multiply-accumulates,
or ``None`` when a shape it needs is missing or not fully known. They never raise on a
well-formed node and never guess a dimension: the caller decides what an unknown means.
The counts are for the shapes given (batch included): a cost model that wants one sample
passes batch-1 shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import helper

__all__ = ["MACS", "conv_macs", "conv_transpose_macs", "gemm_macs", "matmul_macs", "node_macs"]

Shape = tuple[int | None, ...]
Shapes = Mapping[str, Shape | None]


def _dims(shapes: Shapes, node: onnx.NodeProto, index: int, output: bool = False):
    """The fully known shape of input (or output) ``index`` of ``node``, else None."""
    names = node.output if output else node.input
    if index >= len(names) or not names[index]:
        return None
    shape = shapes.get(names[index])
    if shape is None or any(d is None or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def conv_macs(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    """Conv: Y[N, M, *out] with W[M, C/group, *k]; each output element costs (C/group) * prod(k).

    Grouped and depthwise convolutions are covered by W's second dimension.
    """
    w, y = _dims(shapes, node, 1), _dims(shapes, node, 0, output=True)
    if w is None or y is None:
        return None
    return math.prod(y) * math.prod(w[1:])


def conv_transpose_macs(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    """ConvTranspose: X[N, C, *in] with W[C, M/group, *k]; each input element scatters into
    (M/group) * prod(k) outputs."""
    x, w = _dims(shapes, node, 0), _dims(shapes, node, 1)
    if x is None or w is None:
        return None
    return math.prod(x) * math.prod(w[1:])


def gemm_macs(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    """Gemm: op(A)[M, K] x op(B)[K, N] with op = transpose when transA / transB: M * K * N."""
    a, b = _dims(shapes, node, 0), _dims(shapes, node, 1)
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    m, k = (a[1], a[0]) if _attr(node, "transA") else (a[0], a[1])
    n = b[0] if _attr(node, "transB") else b[1]
    return m * k * n


def matmul_macs(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    """MatMul with numpy semantics: prod(Y) * K, K the last dimension of A.

    Covers a weight matrix, two activations (batched rank-3/4 products such as attention's
    Q K^T) and 1-D operands. When Y's shape is not known it is derived from A and B by
    numpy's broadcasting of the batch dimensions.
    """
    a = _dims(shapes, node, 0)
    if a is None:
        return None
    k = a[-1] if a else 1
    y = _dims(shapes, node, 0, output=True)
    if y is None:
        b = _dims(shapes, node, 1)
        if b is None or not a or not b:
            return None
        try:
            batch = np.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            return None
        rows = (a[-2],) if len(a) >= 2 else ()
        cols = (b[-1],) if len(b) >= 2 else ()
        y = (*batch, *rows, *cols)
    return math.prod(y) * k


MACS: dict[str, Callable[[onnx.NodeProto, Shapes], int | None]] = {
    "Conv": conv_macs,
    "ConvTranspose": conv_transpose_macs,
    "Gemm": gemm_macs,
    "MatMul": matmul_macs,
}


def node_macs(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    """MACs of a default-domain linear node (None: shapes unknown); 0 for every other node."""
    fn = MACS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    return 0 if fn is None else fn(node, shapes)
