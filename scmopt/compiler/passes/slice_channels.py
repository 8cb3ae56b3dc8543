"""Pass: slice removed units out of producers, channel-wise ops and layout ops.

Preserves: the values of every kept channel of every tensor. Removed channels disappear from
producer weights/biases, normalisation parameters, per-channel constants, depthwise weights,
Split sizes and Reshape targets. Consumer *inputs* are left to `absorb_replacements`, which must
run afterwards on the same graph.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from scmopt.compiler.passes.channels import Survivors, replace_constant, take
from scmopt.units.analysis import BINARY, NORMS


def slice_channels(graph: gs.Graph, keep: Survivors, opset: int) -> gs.Graph:
    for node in list(graph.nodes):
        out = node.outputs[0] if node.outputs else None
        if out is None:
            continue
        if node.op in ("Conv", "Gemm", "MatMul") and keep.changed(out.name):
            _slice_producer(node, keep.channels(out.name))
        elif node.op in NORMS and keep.changed(out.name):
            mask = keep.channels(out.name)
            for i in NORMS[node.op]:
                replace_constant(node, i, take(node.inputs[i].values, mask, 0), "sliced")
        elif node.op in BINARY and keep.changed(out.name):
            _slice_broadcast_constants(node, keep.features(out.name))
        elif node.op == "Concat":
            # a producer whose channels were all removed leaves an empty input: drop it (its
            # dead branch is then removed by cleanup)
            kept = [t for t in node.inputs if _nonempty(t, keep)]
            if len(kept) < len(node.inputs):
                node.inputs.clear()
                node.inputs.extend(kept)
        elif node.op == "Split" and keep.changed(node.inputs[0].name):
            _resize_split(node, keep, opset)
        elif node.op == "Resize" and keep.changed(out.name) and len(node.inputs) > 3:
            sizes = node.inputs[3].values.copy()
            sizes[1] = int(keep.channels(out.name).sum())
            replace_constant(node, 3, sizes, "sliced")
        elif node.op == "Reshape" and keep.changed(out.name):
            target = node.inputs[1].values.copy()
            if target[1] > 0:
                target[1] = int(keep.features(out.name).sum())
                replace_constant(node, 1, target, "sliced")
    return graph


def _slice_producer(node: gs.Node, mask: np.ndarray) -> None:
    w = node.inputs[1].values
    if node.op == "Conv":  # group 1 producer, or depthwise pass-through: rows either way
        replace_constant(node, 1, take(w, mask, 0), "sliced")
        if int(node.attrs.get("group", 1)) > 1:
            node.attrs["group"] = int(mask.sum())
    elif node.op == "Gemm":
        axis = 0 if int(node.attrs.get("transB", 0)) else 1
        replace_constant(node, 1, take(w, mask, axis), "sliced")
    else:  # MatMul
        replace_constant(node, 1, take(w, mask, 1), "sliced")
    if len(node.inputs) > 2 and node.inputs[2].name:
        b = node.inputs[2].values
        if b.ndim >= 1 and b.shape[-1] == len(mask):
            replace_constant(node, 2, take(b, mask, b.ndim - 1), "sliced")


def _slice_broadcast_constants(node: gs.Node, features: np.ndarray) -> None:
    """Per-channel constant operands of element-wise ops lose the removed channels."""
    r = len(node.outputs[0].shape)
    for i, t in enumerate(node.inputs):
        if not isinstance(t, gs.Constant):
            continue
        axis = t.values.ndim - (r - 1)
        if axis >= 0 and t.values.shape[axis] == len(features):
            replace_constant(node, i, take(t.values, features, axis), "sliced")


def _resize_split(node: gs.Node, keep: Survivors, opset: int) -> None:
    sizes = np.array([int(keep.features(o.name).sum()) for o in node.outputs], dtype=np.int64)
    if opset < 13:
        node.attrs["split"] = sizes.tolist()
        return
    node.attrs.pop("num_outputs", None)
    const = gs.Constant(f"{node.name}__split_sizes", sizes)
    if len(node.inputs) > 1:
        node.inputs[1] = const
    else:
        node.inputs.append(const)


def _nonempty(t: gs.Tensor, keep: Survivors) -> bool:
    mask = keep.channels(t.name)
    return mask is None or bool(mask.any())
