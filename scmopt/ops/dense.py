"""Dense layers: Gemm and MatMul with a constant weight read a cut on the contracted (last)
axis and produce fresh channels on their last axis; rank > 2 activations ([B, T, D] tokens)
have the other axes as positions. MatMul on any other axis of a labelled tensor is
channel-wise; a product of two activations (attention) freezes its operands."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from scmopt.ops.edit import add_after, replace_constant, set_bias
from scmopt.ops.elementwise import const_value, rank
from scmopt.ops.macs import gemm_macs, matmul_macs
from scmopt.ops.mixing import Rows, mix
from scmopt.ops.registry import Handler, register
from scmopt.units.layout import Layout


def _weight(node: gs.Node) -> np.ndarray:
    """The weight as [K, O] float64 (Gemm's transB and alpha applied)."""
    w = node.inputs[1].values.astype(np.float64)
    if node.op == "Gemm":
        if int(node.attrs.get("transB", 0)):
            w = w.T
        w = w * float(node.attrs.get("alpha", 1.0))
    return w


class Dense(Handler):
    linear = True
    counts_macs = True

    def slice(self, node, keep):
        out = node.outputs[0].name
        if not keep.changed(out) or not keep.produces(node):
            return
        mask = keep.channels(out)
        w = node.inputs[1].values
        axis = 0 if node.op == "Gemm" and int(node.attrs.get("transB", 0)) else 1
        replace_constant(node, 1, np.compress(mask, w, axis), "sliced")
        if len(node.inputs) > 2 and node.inputs[2].name:
            b = node.inputs[2].values
            if b.ndim >= 1 and b.shape[-1] == len(mask):
                replace_constant(node, 2, np.compress(mask, b, b.ndim - 1), "sliced")

    def weight_view(self, node, layout):
        return layout.weight_rows(_weight(node))

    def absorb(self, graph, node, layout, spatial, rows: Rows, b, mask):
        w = node.inputs[1].values
        dtype = w.dtype
        trans = node.op == "Gemm" and int(node.attrs.get("transB", 0))
        w3 = layout.weight_rows(_weight(node))  # [C, block, O]
        c, blk, n_out = w3.shape
        mixed = layout.feature_rows(mix(w3, rows))[layout.feature_mask(mask)]  # [F', O]
        if b.shape[1] in (1, blk):
            contrib = np.einsum("is,iso->o", np.broadcast_to(b, (c, blk)), w3)
        else:  # per-position offsets over further axes (tokens): one row per position
            contrib = np.einsum("isr,iso->ro", b.reshape(c, blk, -1), w3)
            contrib = contrib.reshape(*spatial, n_out)
        if node.op == "Gemm":
            beta = float(node.attrs.get("beta", 1.0))
            node.attrs["alpha"], node.attrs["beta"] = 1.0, 1.0
            replace_constant(node, 1, (mixed.T if trans else mixed).astype(dtype), "absorbed")
            has_c = len(node.inputs) > 2 and node.inputs[2].name
            # C is a scalar, [O] or [1, O] (propagate refuses other shapes)
            cval = (
                beta * np.broadcast_to(node.inputs[2].values.reshape(-1), (n_out,))
                if has_c
                else 0.0
            )
            if has_c or contrib.any():
                set_bias(node, cval + contrib, dtype)
            return
        replace_constant(node, 1, mixed.astype(dtype), "absorbed")
        if contrib.any() and not _into_bias_add(node, contrib):
            add_after(graph, node, contrib.astype(dtype), "absorbed_bias")


@register("Gemm")
class Gemm(Dense):
    def macs(self, node, shapes):
        return gemm_macs(node, shapes)

    def propagate(self, node, ctx):
        a, b = node.inputs[0], node.inputs[1]
        bv = const_value(b)
        if bv is None or int(node.attrs.get("transA", 0)):
            return "non-constant or transposed operands"
        n_out = bv.shape[0] if int(node.attrs.get("transB", 0)) else bv.shape[1]
        if len(node.inputs) > 2 and node.inputs[2].name:
            cv = const_value(node.inputs[2])
            if cv is None or cv.size not in (1, n_out):
                return "bias that is not a constant vector"
        if ctx.only_first_input_labelled(node):
            return "labelled weights"
        lay = ctx.lay(a)
        if lay is not None and lay.axis != 1:
            return "unexpected input layout"
        ctx.cut(a, node, axis=1)
        ctx.set(node.outputs[0], Layout.simple(ctx.fresh(node.name, n_out)))
        return None


def _into_bias_add(node: gs.Node, contrib: np.ndarray) -> bool:
    """Adds `contrib` to the constant of the bias Add that alone reads the MatMul's output
    (the exporters' MatMul + Add(b)), when that needs no larger constant; True if done."""
    out = node.outputs[0]
    if len(out.outputs) != 1 or out.outputs[0].op != "Add":
        return False
    add = out.outputs[0]
    k = 1 - list(add.inputs).index(out) if out in add.inputs else -1
    if k not in (0, 1) or not isinstance(add.inputs[k], gs.Constant):
        return False
    bias = add.inputs[k].values
    if np.broadcast_shapes(bias.shape, contrib.shape) != bias.shape:
        return False
    replace_constant(add, k, (bias + contrib).astype(bias.dtype), "absorbed")
    return True


def _batched_product(node: gs.Node, ctx) -> str | None:
    """A product of two activations ([..., M, K] @ [..., K, N], attention scores and context)
    is independent per index of its batch axes: channels on one of them (attention heads)
    pass through, unified between the operands; elsewhere they are refused."""
    a, b = node.inputs
    la, lb = ctx.lay(a), ctx.lay(b)
    if la is None and lb is None:
        return None
    r = rank(node.outputs[0])
    if r is None or rank(a) != r or rank(b) != r:
        return "product of two activations (attention) of unknown or unequal ranks"
    lay = la if la is not None else lb
    if lay.axis >= r - 2:
        return "product of two activations over the channel axis (attention scores or context)"
    for t, other in ((a, la), (b, lb)):
        if other is None:
            if t.shape is None or t.shape[lay.axis] != 1:
                return "product with an unlabelled activation across channels"
        elif not other.same_geometry(lay):
            return "product of two activations with different channel layouts"
    if la is not None and lb is not None:
        ctx.union(la.labels, lb.labels)
    ctx.heads.update(int(v) for v in lay.labels)
    ctx.set(node.outputs[0], lay)
    return None


@register("MatMul")
class MatMul(Dense):
    def macs(self, node, shapes):
        return matmul_macs(node, shapes)

    def propagate(self, node, ctx):
        a, b = node.inputs
        bv = const_value(b)
        if bv is None:
            if ctx.lay(b) is not None and const_value(a) is not None:
                return "constant first operand (weight @ activation)"
            return _batched_product(node, ctx)
        if bv.ndim != 2:
            return "weight of rank != 2"
        r = rank(a)
        if r is None or r < 2:
            return "activation of unknown rank"
        lay = ctx.lay(a)
        if lay is not None and lay.axis != r - 1:  # rows are independent: channel-wise
            ctx.set(node.outputs[0], lay)
            return None
        ctx.cut(a, node, axis=r - 1)
        ctx.set(node.outputs[0], Layout.simple(ctx.fresh(node.name, bv.shape[1]), axis=r - 1))
        return None
