"""What the load-time rewrites match on: inferred dims, constant operands, sole consumers."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def dims(t: gs.Tensor) -> list | None:
    """The tensor's inferred dims (ints, symbols, None), or None when its rank is unknown."""
    shape = getattr(t, "shape", None)
    return list(shape) if shape is not None else None


def same(a: list, b: list) -> bool:
    """Dims equal as known values or as the same symbol (unknown dims are never equal)."""
    return len(a) == len(b) and all(x is not None and x == y for x, y in zip(a, b, strict=True))


def static(d) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d > 0


def const(t: gs.Tensor) -> np.ndarray | None:
    """The values of a constant operand (initializer), or None."""
    return t.values if isinstance(t, gs.Constant) else None


def producer(t: gs.Tensor, op: str) -> gs.Node | None:
    """The node of type `op` that writes `t`, or None."""
    return t.inputs[0] if len(t.inputs) == 1 and t.inputs[0].op == op else None


def sole_consumer(t: gs.Tensor, op: str | None = None) -> gs.Node | None:
    """The one node reading `t` (of type `op` if given), or None when `t` has other readers or
    is a graph output (callers check outputs with `is_output`)."""
    if len(t.outputs) != 1 or (op is not None and t.outputs[0].op != op):
        return None
    return t.outputs[0]


def is_output(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(o is t for o in graph.outputs)


def ints(node: gs.Node, name: str, index: int, opset: int, since: int) -> list[int] | None:
    """An int-list operand that moved from attribute to input at opset `since` (Squeeze axes,
    Split sizes): the attribute below `since`, the constant input from it on; None when the
    input is not a constant, [] when absent."""
    if opset < since:
        return [int(v) for v in node.attrs.get(name, [])]
    if len(node.inputs) <= index or node.inputs[index].name == "":
        return []
    v = const(node.inputs[index])
    return None if v is None else [int(x) for x in np.ravel(v)]
