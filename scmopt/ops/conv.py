"""Convolutions: group-1 convs produce fresh channels and read a cut; depthwise convs are
channel-wise. A plan's replacement is absorbed exactly, borders included.

A constant channel entering a padded convolution is not a per-channel bias near the borders:
the exact contribution is added after the convolution as Conv(ones, V) (constant channels;
works for dynamic spatial shapes too) or as a constant map (per-position constants, static
shapes only).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs

from scmopt.ops.edit import add_after, bias_values, replace_constant, set_bias
from scmopt.ops.elementwise import const_value
from scmopt.ops.macs import conv_macs, conv_transpose_macs
from scmopt.ops.mixing import Rows, mix
from scmopt.ops.registry import Handler, register
from scmopt.units.layout import Layout


@register("ConvTranspose")
class ConvTranspose(Handler):
    counts_macs = True

    def propagate(self, node, ctx):
        if all(ctx.lay(t) is None for t in node.inputs):
            return None
        return "transposed convolutions are not sliced yet"

    def macs(self, node, shapes):
        return conv_transpose_macs(node, shapes)


@register("Conv")
class Conv(Handler):
    linear = True
    counts_macs = True

    def macs(self, node, shapes):
        return conv_macs(node, shapes)

    def propagate(self, node, ctx):
        x, w = node.inputs[0], node.inputs[1]
        wv = const_value(w)
        if wv is None or (len(node.inputs) > 2 and const_value(node.inputs[2]) is None):
            return "non-constant weights"
        if ctx.only_first_input_labelled(node):
            return "labelled weights"
        group = int(node.attrs.get("group", 1))
        lay = ctx.lay(x)
        cin = wv.shape[1] * group
        if lay is not None and (lay.axis != 1 or not lay.major or lay.features != cin):
            return "unexpected input layout"
        if lay is not None and lay.block != 1:
            return "unexpected input layout"
        if group == 1:
            ctx.cut(x, node, axis=1)
            ctx.set(node.outputs[0], Layout.simple(ctx.fresh(node.name, wv.shape[0])))
            return None
        if group == cin and wv.shape[0] == cin and wv.shape[1] == 1:  # depthwise: channel-wise
            if lay is None:
                labs = ctx.fresh(node.name, cin)
                ctx.freeze(labs, f"depthwise conv '{node.name}' on an unlabelled input")
                lay = Layout.simple(labs)
            ctx.set(node.outputs[0], lay)
            return None
        if lay is not None:
            ctx.freeze(lay.labels, f"feeds grouped conv '{node.name}'")
        out = ctx.fresh(node.name, wv.shape[0])
        ctx.freeze(out, f"output of grouped conv '{node.name}'")
        ctx.set(node.outputs[0], Layout.simple(out))
        return None

    def slice(self, node, keep):
        out = node.outputs[0].name
        if not keep.changed(out):
            return
        mask = keep.channels(out)
        # group-1 producer, or depthwise pass-through: rows either way
        replace_constant(node, 1, np.compress(mask, node.inputs[1].values, 0), "sliced")
        if int(node.attrs.get("group", 1)) > 1:
            node.attrs["group"] = int(mask.sum())
        if len(node.inputs) > 2 and node.inputs[2].name:
            b = node.inputs[2].values
            if b.ndim >= 1 and b.shape[-1] == len(mask):
                replace_constant(node, 2, np.compress(mask, b, b.ndim - 1), "sliced")

    def weight_view(self, node, layout):
        w = node.inputs[1].values.astype(np.float64)
        return w.transpose(1, 0, *range(2, w.ndim)).reshape(w.shape[1], 1, -1)

    def absorb(self, graph, node, layout, spatial, rows: Rows, b, mask):
        w = node.inputs[1].values
        dtype = w.dtype
        w64 = w.astype(np.float64)
        wt = np.moveaxis(w64, 1, 0)  # [Cin, O, *k]
        mixed = np.moveaxis(np.compress(mask, mix(wt, rows), 0), 0, 1)
        replace_constant(node, 1, mixed.astype(dtype), "absorbed")
        if not b.any():
            return
        bias = bias_values(node, w.shape[0])
        interior = w64.reshape(*w.shape[:2], -1).sum(axis=2) @ b.mean(axis=1)
        if b.shape[1] == 1 and not _pads(node):  # no border: a per-channel bias is exact
            set_bias(node, bias + interior, dtype)
            return
        if spatial is not None:
            bmap = np.broadcast_to(b, (b.shape[0], int(np.prod(spatial))))
            contrib = _conv_of_map(node, w64, bmap.reshape(b.shape[0], *spatial))
            flat = contrib.reshape(w.shape[0], -1)
            spread = flat.max(axis=1) - flat.min(axis=1)
            if np.all(spread <= 1e-9 * (1.0 + np.abs(flat).max())):
                set_bias(node, bias + flat[:, 0], dtype)
                return
            if b.shape[1] > 1:  # per-position constants: the exact map
                add_after(graph, node, contrib[None].astype(dtype), "bias_map")
                return
        # Constant channels under zero padding: the contribution is Conv(ones, V) with
        # V = sum_i b_i W_i, exact at the border for any (even dynamic) spatial size, and only
        # O*k*k parameters instead of an O*H*W map.
        v = np.einsum("oi...,i->o...", w64, b[:, 0])[:, None]
        _add_conv_of_ones(graph, node, v.astype(dtype), spatial)


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
    # only channels with a non-zero map contribute (the removed ones): O x removed per tap
    nz = np.flatnonzero(np.abs(bmap).reshape(len(bmap), -1).max(axis=1) > 0)
    result = np.zeros((w64.shape[0], int(np.prod(out_shape))))
    for tap in itertools.product(*[range(k) for k in kernel]):
        window = tuple(
            slice(
                tap[a] * dil[a], tap[a] * dil[a] + (out_shape[a] - 1) * strides[a] + 1, strides[a]
            )
            for a in range(nd)
        )
        taps = w64[(slice(None), nz, *tap)]  # [O, removed]
        result += taps @ padded[(nz, *window)].reshape(len(nz), -1)
    return result.reshape(w64.shape[0], *out_shape)


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
