"""Rewrite: a fused projection split on its output features, as one projection per part.

GPT-2's ``c_attn(x).split(D, dim=2)``, Phi's ``qkv_proj`` and (after rewrites.fused_qkv) timm
and Paddle attention compute q, k and v with one ``MatMul(x, W) (+ b)`` and a Split of its last
axis. A Split of labelled channels is not a layout the analysis follows, so every head of the
layer freezes. Part k of the Split is exactly ``MatMul(x, W[:, part k]) (+ b[part k])``; this
pass writes one such projection per part, so each part's heads are the units of their own
linear and compile slices them as for separate q, k, v projections.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from scmopt.io.rewrites.match import const, dims, ints, is_output, producer, sole_consumer


def applies(model: onnx.ModelProto) -> bool:
    """Whether the model has a Split at all (cheap, before the import)."""
    return any(n.op_type == "Split" for n in model.graph.node)


def _sizes(split: gs.Node, width: int, opset: int) -> list[int] | None:
    sizes = ints(split, "split", 1, opset, 13)
    if sizes is None:
        return None
    n = len(split.outputs)
    if not sizes:  # equal parts (num_outputs at opset 18+, or the output count)
        n = int(split.attrs.get("num_outputs", n))
        step = -(-width // n)
        sizes = [min(step, width - i * step) for i in range(n)]
    return sizes if sum(sizes) == width and all(s > 0 for s in sizes) else None


def _match(split: gs.Node, graph: gs.Graph):
    """(x, W, b or None, part sizes) when `split` cuts a projection's output features."""
    if split.op != "Split":
        return None
    t = split.inputs[0]
    st = dims(t)
    if st is None or split.attrs.get("axis", 0) not in (-1, len(st) - 1) or len(st) < 2:
        return None
    if sole_consumer(t) is not split or is_output(graph, t):
        return None
    b, mm = None, producer(t, "MatMul")
    add = producer(t, "Add")
    if add is not None:
        consts = [const(i) for i in add.inputs]
        k = next((i for i, c in enumerate(consts) if c is not None), None)
        if k is None or consts[1 - k] is not None:
            return None
        b = consts[k]
        mm = producer(add.inputs[1 - k], "MatMul")
        if mm is None or sole_consumer(mm.outputs[0]) is not add or is_output(graph, mm.outputs[0]):
            return None
    if mm is None:
        return None
    w = const(mm.inputs[1])
    if w is None or w.ndim != 2 or dims(mm.inputs[0]) is None or len(dims(mm.inputs[0])) < 2:
        return None
    width = w.shape[1]
    if b is not None:
        if b.size not in (1, width) or (b.size == width and b.shape[-1] != width):
            return None
        b = np.broadcast_to(np.ravel(b), (width,))
    sizes = _sizes(split, width, graph.opset)
    if sizes is None or len(sizes) != len(split.outputs):
        return None
    return mm.inputs[0], w, b, sizes


def rewrite(graph: gs.Graph) -> int:
    """Replaces each matched projection + Split by one MatMul (+ Add) per part writing that
    part's tensor, in place; returns how many (dead nodes are left for the caller's cleanup).

    Preserves: the function computed and every graph input/output (name, type, dims); every
    part keeps its tensor name. Needs inferred shapes.
    """
    found = [(s, m) for s in graph.nodes if (m := _match(s, graph)) is not None]
    for split, (x, w, b, sizes) in found:
        outs = list(split.outputs)
        split.outputs = []
        off = 0
        for k, (out, size) in enumerate(zip(outs, sizes, strict=True)):
            cols = slice(off, off + size)
            off += size
            name = f"{split.name}/part{k}"
            wk = gs.Constant(f"{name}/weight", np.ascontiguousarray(w[:, cols]))
            if b is None:
                graph.nodes.append(gs.Node("MatMul", name, inputs=[x, wk], outputs=[out]))
                continue
            mid = gs.Variable(f"{name}/matmul_out", out.dtype)
            bk = gs.Constant(f"{name}/bias", np.ascontiguousarray(b[cols]))
            graph.nodes += [
                gs.Node("MatMul", name, inputs=[x, wk], outputs=[mid]),
                gs.Node("Add", f"{name}/bias_add", inputs=[mid, bk], outputs=[out]),
            ]
    return len(found)
