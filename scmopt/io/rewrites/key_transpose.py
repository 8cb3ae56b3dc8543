"""Rewrite: the dynamo exporter's K^T through a batch-times-heads merge, as one Transpose.

torch's dynamo exporter lowers ``k.transpose(-2, -1)`` of a ``[B, H, T, Dh]`` key inside its
scaled-dot-product decomposition as ``Reshape([-1, T, Dh]) -> Transpose([0, 2, 1]) ->
Reshape([B, H, Dh, T])``. The first Reshape merges the batch with the heads, so no channel
layout survives it and every head of the layer freezes. The chain computes exactly
``Transpose(x, perm=[0, 1, 3, 2])``; this pass puts that in its place.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from scmopt.io.rewrites.match import dims, same


def _match(r2: gs.Node) -> tuple[gs.Tensor, gs.Node, gs.Node] | None:
    """(x, first Reshape, Transpose) when ``r2`` ends the chain; None otherwise."""
    if r2.op != "Reshape" or not r2.inputs or not r2.inputs[0].inputs:
        return None
    tr = r2.inputs[0].inputs[0]
    if tr.op != "Transpose" or list(tr.attrs.get("perm", [])) != [0, 2, 1]:
        return None
    if not tr.inputs or not tr.inputs[0].inputs:
        return None
    r1 = tr.inputs[0].inputs[0]
    if r1.op != "Reshape" or len(r1.outputs[0].outputs) != 1 or len(tr.outputs[0].outputs) != 1:
        return None
    x = r1.inputs[0]
    sx, mid, so = dims(x), dims(r1.outputs[0]), dims(r2.outputs[0])
    if sx is None or mid is None or so is None or len(sx) != 4 or len(mid) != 3:
        return None
    # The merge keeps (T, Dh) as its last two axes and the end restores (B, H) in front.
    if not same(mid[1:], sx[2:]) or not same(so, [sx[0], sx[1], sx[3], sx[2]]):
        return None
    return x, r1, tr


def applies(model: onnx.ModelProto) -> bool:
    """Whether the model has a Transpose([0, 2, 1]), the middle of the chain (a cheap test
    before importing the graph)."""
    return any(n.op_type == "Transpose" and any(a.name == "perm" and list(a.ints) == [0, 2, 1]
                                                for a in n.attribute)
               for n in model.graph.node)  # fmt: skip


def rewrite(graph: gs.Graph) -> int:
    """Replaces each matched chain by ``Transpose([0, 1, 3, 2])`` of the chain's input, in
    place; returns how many were rewritten (the dead Reshape and Transpose are left for the
    caller's cleanup).

    Preserves: the function computed and every graph input/output (name, type, dims); the
    chain's output tensor keeps its name. Needs inferred shapes (the match checks that the
    merge and the split are over the same B, H, T, Dh).
    """
    rewrites = [(r2, m[0]) for r2 in graph.nodes if (m := _match(r2)) is not None]
    for r2, x in rewrites:
        r2.op = "Transpose"
        r2.attrs = {"perm": [0, 1, 3, 2]}
        r2.inputs = [x]
    return len(rewrites)
