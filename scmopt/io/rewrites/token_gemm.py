"""Rewrite: a Gemm over flattened tokens, as the MatMul (+ Add) it computes per token.

Hugging Face's ``Conv1D`` (GPT-2 and its kin) and torch's ``addmm`` lowering of a linear on a
``[B, T, D]`` activation export as ``Reshape([-1, D]) -> Gemm(W, b) -> Reshape([B, T, O])``
(after attention the first Reshape also merges the heads: ``[B, T, H, Dh] -> [B*T, H*Dh]``).
The first Reshape merges the batch with the tokens, so no channel layout survives it and
every projection and FFN neuron of the model freezes. For a constant W and b the chain is
``MatMul(x, alpha W) + beta b`` on the unflattened x (its feature axes merged by a
``Reshape([0, 0, D])``); this pass puts that in its place.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from scmopt.io.rewrites.match import const, dims, producer, same, sole_consumer, static


def applies(model: onnx.ModelProto) -> bool:
    """Whether some Gemm reads a Reshape's output (a cheap test before importing the graph)."""
    reshaped = {o for n in model.graph.node if n.op_type == "Reshape" for o in n.output}
    return any(n.op_type == "Gemm" and n.input and n.input[0] in reshaped for n in model.graph.node)


def _match(gemm: gs.Node, graph: gs.Graph):
    """(x, W [D, O], b [O] or None, the Reshape back) when `gemm` is in such a chain."""
    if gemm.op != "Gemm" or gemm.attrs.get("transA", 0) or len(gemm.inputs) < 2:
        return None
    flat = producer(gemm.inputs[0], "Reshape")
    w = const(gemm.inputs[1])
    back = sole_consumer(gemm.outputs[0], "Reshape")
    if flat is None or w is None or w.ndim != 2 or back is None:
        return None
    if len(flat.outputs[0].outputs) != 1 or any(o is gemm.outputs[0] for o in graph.outputs):
        return None
    x = flat.inputs[0]
    sx, sm, so = dims(x), dims(flat.outputs[0]), dims(back.outputs[0])
    if sx is None or sm is None or so is None or len(so) < 3 or len(sm) != 2:
        return None
    lead, d, o = len(so) - 1, sm[-1], so[-1]
    # [L.., F..] -> [M, D] -> [M, O] -> [L.., O] with prod(F) = D and the dims of L after
    # the first equal: by counting, the first equals x's too, so the end restores x's
    # leading dims exactly (F: one feature axis, or the [H, Dh] of a context merge).
    feats = sx[lead:]
    if not static(d) or len(sx) <= lead or not all(map(static, feats)):
        return None
    if int(np.prod(feats)) != d or not same(so[1:-1], sx[1:lead]):
        return None
    w = w.T if gemm.attrs.get("transB", 0) else w
    if w.shape[0] != d or w.shape[1] != o:
        return None
    b = None
    if len(gemm.inputs) > 2 and gemm.inputs[2].name:
        b = const(gemm.inputs[2])
        if b is None or b.size not in (1, o) or (b.ndim == 2 and b.shape[0] != 1):
            return None
        b = np.broadcast_to(np.ravel(b), (o,))
    return x, w, b, back, len(feats) > 1


def rewrite(graph: gs.Graph) -> int:
    """Replaces each matched chain by MatMul(x, alpha W) (+ Add(beta b)) writing the chain's
    output tensor, in place; returns how many (dead nodes are left for the caller's cleanup).

    Preserves: the function computed and every graph input/output (name, type, dims); the
    output of the Reshape back keeps its name. Needs inferred shapes.
    """
    found = [(g, m) for g in graph.nodes if (m := _match(g, graph)) is not None]
    for gemm, (x, w, b, back, merge) in found:
        alpha, beta = float(gemm.attrs.get("alpha", 1.0)), float(gemm.attrs.get("beta", 1.0))
        if merge:  # the features span several axes: merge them alone, batch and tokens kept
            lead = len(back.outputs[0].shape) - 1
            target = gs.Constant(f"{gemm.name}/merge_shape",
                                 np.array([0] * lead + [w.shape[0]], np.int64))  # fmt: skip
            merged = gs.Variable(f"{gemm.name}/merged", x.dtype)
            graph.nodes.append(gs.Node("Reshape", f"{gemm.name}/merge", inputs=[x, target],
                                       outputs=[merged]))  # fmt: skip
            x = merged
        weight = gs.Constant(f"{gemm.name}/weight", np.ascontiguousarray(alpha * w, w.dtype))
        y = back.outputs[0]
        back.outputs = []
        if b is None:
            graph.nodes.append(gs.Node("MatMul", f"{gemm.name}/matmul", inputs=[x, weight],
                                       outputs=[y]))  # fmt: skip
            continue
        mid = gs.Variable(f"{gemm.name}/matmul_out", y.dtype)
        bias = gs.Constant(f"{gemm.name}/bias", np.ascontiguousarray(beta * b, w.dtype))
        graph.nodes += [
            gs.Node("MatMul", f"{gemm.name}/matmul", inputs=[x, weight], outputs=[mid]),
            gs.Node("Add", f"{gemm.name}/bias_add", inputs=[mid, bias], outputs=[y]),
        ]
    return len(found)
