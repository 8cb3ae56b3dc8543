"""Small onnx-graphsurgeon edits the op handlers share (new constants, biases, added maps)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def replace_constant(node: gs.Node, index: int, values: np.ndarray, tag: str) -> None:
    """Gives input `index` of `node` a fresh constant (weights may be shared between nodes)."""
    old = node.inputs[index]
    node.inputs[index] = gs.Constant(f"{old.name}__{tag}_{node.name}", np.ascontiguousarray(values))


def bias_values(node: gs.Node, n_out: int) -> np.ndarray:
    """Input 2 (bias) broadcast to [n_out] float64, zeros when absent."""
    if len(node.inputs) > 2 and node.inputs[2].name:
        return np.broadcast_to(node.inputs[2].values, (n_out,)).astype(np.float64)
    return np.zeros(n_out)


def set_bias(node: gs.Node, bias: np.ndarray, dtype: np.dtype) -> None:
    const = gs.Constant(f"{node.name}__absorbed_bias", bias.astype(dtype))
    if len(node.inputs) > 2:
        node.inputs[2] = const
    else:
        node.inputs.append(const)


def add_after(graph: gs.Graph, node: gs.Node, values: np.ndarray, tag: str) -> None:
    """Adds a constant to `node`'s output; readers of the output see the sum."""
    out = node.outputs[0]
    pre = gs.Variable(f"{out.name}__{tag}_pre", dtype=out.dtype)
    node.outputs[0] = pre
    const = gs.Constant(f"{node.name}__{tag}", values)
    graph.nodes.append(
        gs.Node("Add", f"{node.name}__{tag}_add", inputs=[pre, const], outputs=[out])
    )
