"""Pass: absorb the plan's replacements into the linear consumers of each cut.

A consumer computes W x with x the cut; the plan replaces x by M x + B (scmopt.plan). So the
consumer becomes (W M) x + W B: weights mixed by M (folds), the constant W B added to the bias,
and the columns of removed units, zero in W M, dropped.

Preserves: the consumer's output equals its output on the plan's simulation, exactly. For a
padded convolution W B is not a per-channel bias near the borders: the exact contribution is
added after the convolution as Conv(ones, V) (constant channels; works for dynamic spatial
shapes too) or as a constant map (per-position constants, static shapes only).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs

from scmopt.compiler.passes.channels import Survivors, replace_constant, take
from scmopt.plan import Plan
from scmopt.units.analysis import Cut


def absorb_replacements(graph: gs.Graph, keep: Survivors, plan: Plan) -> gs.Graph:
    """Rewrites every consumer of every touched cut."""
    nodes = {n.name: n for n in graph.nodes}
    for cut in keep.ug.cuts.values():
        if not plan.touches(cut):
            continue
        m, b = plan.cut_affine(cut)
        mask = keep.channels(cut.tensor)
        for name in cut.consumers:
            node = nodes[name]
            if node.op == "Conv":
                _absorb_conv(graph, node, cut, m, b, mask)
            else:
                _absorb_dense(graph, node, cut, m, b, mask)
    return graph


def _bias_index(node: gs.Node, n_out: int, dtype: np.dtype) -> np.ndarray:
    if len(node.inputs) > 2 and node.inputs[2].name:
        return np.broadcast_to(node.inputs[2].values, (n_out,)).astype(np.float64)
    return np.zeros(n_out)


def _set_bias(node: gs.Node, bias: np.ndarray, dtype: np.dtype) -> None:
    const = gs.Constant(f"{node.name}__absorbed_bias", bias.astype(dtype))
    if len(node.inputs) > 2:
        node.inputs[2] = const
    else:
        node.inputs.append(const)


def _absorb_conv(graph: gs.Graph, node: gs.Node, cut: Cut, m, b, mask) -> None:
    w = node.inputs[1].values
    dtype = w.dtype
    w64 = w.astype(np.float64)
    replace_constant(
        node, 1, take(np.einsum("oikl,ij->ojkl", w64, m), mask, 1).astype(dtype), "absorbed"
    )
    if not b.any():
        return
    bias = _bias_index(node, w.shape[0], dtype)
    interior = np.einsum("oikl,i->o", w64, b.mean(axis=1))
    if b.shape[1] == 1 and not _pads(node):  # no border: a per-channel bias is exact
        _set_bias(node, bias + interior, dtype)
        return
    if cut.spatial is not None:
        bmap = np.broadcast_to(b, (b.shape[0], int(np.prod(cut.spatial))))
        contrib = _conv_of_map(node, w64, bmap.reshape(b.shape[0], *cut.spatial))
        flat = contrib.reshape(w.shape[0], -1)
        spread = flat.max(axis=1) - flat.min(axis=1)
        if np.all(spread <= 1e-9 * (1.0 + np.abs(flat).max())):
            _set_bias(node, bias + flat[:, 0], dtype)
            return
        if b.shape[1] > 1:  # per-position constants: the exact map
            _add_after(graph, node, contrib[None].astype(dtype), "bias_map")
            return
    # Constant channels under zero padding: the contribution is Conv(ones, V) with
    # V = sum_i b_i W_i, exact at the border for any (even dynamic) spatial size, and only
    # O*k*k parameters instead of an O*H*W map.
    v = np.einsum("oikl,i->okl", w64, b[:, 0])[:, None]
    _add_conv_of_ones(graph, node, v.astype(dtype), cut.spatial)


def _pads(node: gs.Node) -> bool:
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    return auto in ("SAME_UPPER", "SAME_LOWER") or any(node.attrs.get("pads", []))


def _conv_of_map(node: gs.Node, w64: np.ndarray, bmap: np.ndarray) -> np.ndarray:
    """Conv(bmap) with the node's attributes and no bias, exactly, in float64 numpy.

    (onnxruntime has no float64 Conv, and the map is small: one sample, one einsum per tap.)
    """
    spatial = bmap.shape[1:]
    kernel = w64.shape[2:]
    nd = len(kernel)
    strides = list(node.attrs.get("strides", [1] * nd))
    dil = list(node.attrs.get("dilations", [1] * nd))
    pads = list(node.attrs.get("pads", [0] * 2 * nd))
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        for a in range(nd):
            out = -(-spatial[a] // strides[a])
            total = max((out - 1) * strides[a] + (kernel[a] - 1) * dil[a] + 1 - spatial[a], 0)
            small, big = total // 2, total - total // 2
            pads[a], pads[a + nd] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * 2 * nd
    padded = np.pad(bmap, [(0, 0)] + [(pads[a], pads[a + nd]) for a in range(nd)])
    out_shape = [
        (padded.shape[1 + a] - (kernel[a] - 1) * dil[a] - 1) // strides[a] + 1 for a in range(nd)
    ]
    result = np.zeros((w64.shape[0], *out_shape))
    for tap in itertools.product(*[range(k) for k in kernel]):
        window = tuple(
            slice(
                tap[a] * dil[a], tap[a] * dil[a] + (out_shape[a] - 1) * strides[a] + 1, strides[a]
            )
            for a in range(nd)
        )
        result += np.einsum(
            "oi,i...->o...", w64[(slice(None), slice(None), *tap)], padded[(slice(None), *window)]
        )
    return result


def _absorb_dense(graph, node, cut: Cut, m, b, mask) -> None:
    """Gemm or MatMul reading a [N, C*block] cut."""
    w = node.inputs[1].values
    dtype = w.dtype
    trans = node.op == "Gemm" and int(node.attrs.get("transB", 0))
    alpha = float(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" else 1.0
    wk = (w.T if trans else w).astype(np.float64) * alpha  # [K, O]
    c, blk = cut.channels, cut.block
    w3 = wk.reshape(c, blk, -1)
    mixed = take(np.einsum("ij,iso->jso", m, w3), mask, 0).reshape(-1, wk.shape[1])
    contrib = np.einsum("is,iso->o", np.broadcast_to(b, (c, blk)), w3)
    if node.op == "Gemm":
        beta = float(node.attrs.get("beta", 1.0))
        node.attrs["alpha"], node.attrs["beta"] = 1.0, 1.0
        replace_constant(node, 1, (mixed.T if trans else mixed).astype(dtype), "absorbed")
        has_c = len(node.inputs) > 2 and node.inputs[2].name
        # C is a scalar, [O] or [1, O] (units.py refuses other shapes)
        cval = (
            beta * np.broadcast_to(node.inputs[2].values.reshape(-1), (wk.shape[1],))
            if has_c
            else 0.0
        )
        if has_c or contrib.any():
            _set_bias(node, cval + contrib, dtype)
        return
    replace_constant(node, 1, mixed.astype(dtype), "absorbed")
    if contrib.any():
        _add_after(graph, node, contrib.astype(dtype), "absorbed_bias")


def _add_after(graph: gs.Graph, node: gs.Node, values: np.ndarray, tag: str) -> None:
    """Adds a constant to `node`'s output; readers of the output see the sum."""
    out = node.outputs[0]
    pre = gs.Variable(f"{out.name}__{tag}_pre", dtype=out.dtype)
    node.outputs[0] = pre
    const = gs.Constant(f"{node.name}__{tag}", values)
    graph.nodes.append(
        gs.Node("Add", f"{node.name}__{tag}_add", inputs=[pre, const], outputs=[out])
    )


def _add_conv_of_ones(graph: gs.Graph, node: gs.Node, v: np.ndarray, spatial) -> None:
    """Adds Conv(ones[1, 1, *spatial], v) to the node's output (same conv attributes)."""
    tag = f"{node.name}__border"
    if spatial is not None:
        shape: gs.Tensor = gs.Constant(f"{tag}_shape", np.array([1, 1, *spatial], np.int64))
    else:  # dynamic spatial dims: read them from the convolution's input at run time
        full = gs.Variable(f"{tag}_in_shape", dtype=np.int64)
        rest = gs.Variable(f"{tag}_spatial", dtype=np.int64)
        shape = gs.Variable(f"{tag}_shape", dtype=np.int64)
        graph.nodes.append(gs.Node("Shape", f"{tag}_in_shape", inputs=[node.inputs[0]],
                                   outputs=[full]))  # fmt: skip
        if graph.opset >= 10:
            starts = gs.Constant(f"{tag}_starts", np.array([2], np.int64))
            ends = gs.Constant(f"{tag}_ends", np.array([np.iinfo(np.int64).max], np.int64))
            graph.nodes.append(gs.Node("Slice", f"{tag}_slice", inputs=[full, starts, ends],
                                       outputs=[rest]))  # fmt: skip
        else:
            graph.nodes.append(gs.Node("Slice", f"{tag}_slice", inputs=[full], outputs=[rest],
                                       attrs={"starts": [2], "ends": [2**31 - 1]}))  # fmt: skip
        lead = gs.Constant(f"{tag}_lead", np.array([1, 1], np.int64))
        graph.nodes.append(gs.Node("Concat", f"{tag}_concat", inputs=[lead, rest],
                                   outputs=[shape], attrs={"axis": 0}))  # fmt: skip
    ones = gs.Variable(f"{tag}_ones", dtype=v.dtype)
    one = gs.Constant(f"{tag}_one", np.ones(1, dtype=v.dtype))
    graph.nodes.append(gs.Node("ConstantOfShape", f"{tag}_ones", attrs={"value": one},
                               inputs=[shape], outputs=[ones]))  # fmt: skip
    border = gs.Variable(f"{tag}_map", dtype=v.dtype)
    attrs = {k: a for k, a in node.attrs.items() if k != "group"}
    kern = gs.Constant(f"{tag}_kernel", v)
    graph.nodes.append(gs.Node("Conv", tag, attrs=attrs, inputs=[ones, kern], outputs=[border]))
    out = node.outputs[0]
    pre = gs.Variable(f"{out.name}__border_pre", dtype=out.dtype)
    node.outputs[0] = pre
    graph.nodes.append(gs.Node("Add", f"{tag}_add", inputs=[pre, border], outputs=[out]))
