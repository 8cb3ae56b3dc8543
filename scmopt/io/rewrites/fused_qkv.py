"""Rewrite: a fused QKV head split, as one head split per projection.

timm and Paddle attention write ``qkv(x).reshape(B, T, 3, H, Dh).permute(2, 0, 3, 1, 4)`` and
take q, k, v along the new first axis (``unbind``: Split + Squeeze, or Slice + Squeeze, or a
Gather per index). The permute moves the batch off axis 0, so no channel layout survives it
and every head freezes. Part s of that is exactly ``Transpose(Reshape(t[..., s*H*Dh:(s+1)*H*Dh],
[0, 0, H, Dh]), [0, 2, 1, 3])``; this pass writes it so, with one Split of t on its last axis
(which rewrites.split_projection then turns into one projection per part).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from scmopt.io.rewrites.match import const, dims, ints, same, sole_consumer, static

PERM = [2, 0, 3, 1, 4]


def applies(model: onnx.ModelProto) -> bool:
    """Whether the model has a Transpose(perm [2, 0, 3, 1, 4]) (cheap, before the import)."""
    return any(n.op_type == "Transpose" and any(a.name == "perm" and list(a.ints) == PERM
                                                for a in n.attribute)
               for n in model.graph.node)  # fmt: skip


def _squeezed(node: gs.Node, opset: int) -> gs.Tensor | None:
    """The output of the Squeeze(axes [0]) that alone reads `node`'s only output, or None."""
    sq = sole_consumer(node.outputs[0], "Squeeze")
    return sq.outputs[0] if sq is not None and ints(sq, "axes", 1, opset, 13) == [0] else None


def _part(node: gs.Node, parts: int, opset: int) -> dict[int, gs.Tensor] | None:
    """Which parts a reader of the permuted tensor takes: {s: tensor equal to part s}."""
    if node.op == "Gather" and node.attrs.get("axis", 0) == 0:
        idx = const(node.inputs[1])
        if idx is None or idx.ndim != 0 or not -parts <= int(idx) < parts:
            return None
        return {int(idx) % parts: node.outputs[0]}
    if node.op == "Slice":
        v = [const(t) if t.name else None for t in node.inputs[1:5]]
        if opset < 10 or len(v) < 3 or any(x is None for x in v[:3]):
            return None
        steps = v[3] if len(v) > 3 and v[3] is not None else np.ones(1, np.int64)
        s, e, ax = (int(np.ravel(x)[0]) for x in v[:3])
        s = s + parts if s < 0 else s  # qkv[-1:], qkv[2:] (ends INT64_MAX) are parts too
        e = min(e + parts if e < 0 else e, parts)
        if np.size(v[0]) != 1 or ax != 0 or int(np.ravel(steps)[0]) != 1 or e != s + 1:
            return None
        out = _squeezed(node, opset)
        return None if out is None or not 0 <= s < parts else {s: out}
    if node.op == "Split" and node.attrs.get("axis", 0) == 0 and len(node.outputs) == parts:
        sizes = ints(node, "split", 1, opset, 13)
        if sizes is None or sizes not in ([], [1] * parts):
            return None
        outs = {}
        for s, o in enumerate(node.outputs):
            sq = sole_consumer(o, "Squeeze") if o.outputs else None
            if o.outputs and (sq is None or ints(sq, "axes", 1, opset, 13) != [0]):
                return None
            if sq is not None:
                outs[s] = sq.outputs[0]
        return outs
    return None


def _match(tr: gs.Node, opset: int):
    """(t, (S, H, Dh), {part: tensor}) when `tr` is the permute of a fused head split."""
    if tr.op != "Transpose" or list(tr.attrs.get("perm", [])) != PERM:
        return None
    rs = tr.inputs[0].inputs[0] if tr.inputs[0].inputs else None
    if rs is None or rs.op != "Reshape" or sole_consumer(rs.outputs[0]) is not tr:
        return None
    t = rs.inputs[0]
    st, so = dims(t), dims(rs.outputs[0])
    if st is None or so is None or len(st) != 3 or len(so) != 5:
        return None
    s, h, dh = so[2:]
    # [B, T, S*H*Dh] -> [B', T, S, H, Dh]: by counting B' = B, so [0, 0, H, Dh] is the split.
    if not all(map(static, (s, h, dh))) or st[2] != s * h * dh or not same([so[1]], [st[1]]):
        return None
    parts: dict[int, gs.Tensor] = {}
    for reader in tr.outputs[0].outputs:
        got = _part(reader, s, opset)
        if got is None or parts.keys() & got.keys():
            return None
        parts.update(got)
    return (t, (s, h, dh), parts) if parts else None


def rewrite(graph: gs.Graph) -> int:
    """Replaces each matched fused split by Split(t, last axis) -> per part Reshape([0, 0, H,
    Dh]) -> Transpose([0, 2, 1, 3]) writing the part's tensor, in place; returns how many
    (dead nodes are left for the caller's cleanup).

    Preserves: the function computed and every graph input/output (name, type, dims); each
    part's q, k or v tensor keeps its name. Needs inferred shapes.
    """
    opset = graph.opset
    found = [(tr, m) for tr in graph.nodes if (m := _match(tr, opset)) is not None]
    for tr, (t, (s, h, dh), parts) in found:
        for out in parts.values():
            out.inputs.clear()
        pieces = [gs.Variable(f"{tr.name}/part{i}", t.dtype) for i in range(s)]
        size = np.full(s, h * dh, np.int64)
        split = (gs.Node("Split", f"{tr.name}/split", {"axis": -1, "split": size.tolist()},
                         [t], pieces) if opset < 13 else
                 gs.Node("Split", f"{tr.name}/split", {"axis": -1},
                         [t, gs.Constant(f"{tr.name}/sizes", size)], pieces))  # fmt: skip
        graph.nodes.append(split)
        target = gs.Constant(f"{tr.name}/head_split", np.array([0, 0, h, dh], np.int64))
        for i, out in parts.items():
            heads = gs.Variable(f"{tr.name}/part{i}_heads", t.dtype)
            graph.nodes += [
                gs.Node("Reshape", f"{tr.name}/part{i}_split", inputs=[pieces[i], target],
                        outputs=[heads]),
                gs.Node("Transpose", f"{tr.name}/part{i}_t", {"perm": [0, 2, 1, 3]}, [heads],
                        [out]),
            ]  # fmt: skip
    return len(found)
