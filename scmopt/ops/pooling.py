"""Pooling, reductions and softmax: channel-wise when they act on other axes."""

from __future__ import annotations

from scmopt.ops.elementwise import const_value, rank
from scmopt.ops.registry import OnLabelled, register

POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
         "GlobalLpPool")  # fmt: skip
REDUCE = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2",
          "ReduceProd", "ReduceLogSumExp", "ReduceSumSquare")  # fmt: skip


def node_axes(node, index: int = 1) -> list[int] | None:
    """`axes` from the attribute (old opsets) or the constant input (new opsets); [] if none."""
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(node.inputs) > index and node.inputs[index].name:
        v = const_value(node.inputs[index])
        return None if v is None else [int(a) for a in v.ravel()]
    return []


@register(*POOLS)
class Pool(OnLabelled):
    """Spatial pooling of NCHW maps: each channel pooled on its own."""

    def follow(self, node, ctx, lay):
        if lay.axis != 1 or lay.block != 1:
            return "pooling of a tensor whose channels are not on axis 1"
        if ctx.used_outputs_only_first(node):
            return "secondary output in use"
        ctx.set(node.outputs[0], lay)
        return None


@register(*REDUCE)
class Reduce(OnLabelled):
    """A reduction over axes other than batch and channel; keepdims=0 moves the channel axis."""

    def follow(self, node, ctx, lay):
        if lay.block != 1:
            return "reduction over a flattened layout"
        r = rank(node.inputs[0])
        axes = node_axes(node)
        if axes is None or r is None:
            return "unknown axes"
        axes = [a + r if a < 0 else a for a in axes]
        if not axes or any(a in (0, lay.axis) for a in axes):
            return "acts on the batch or channel axis"
        keep = int(node.attrs.get("keepdims", 1))
        axis = lay.axis if keep else lay.axis - sum(a < lay.axis for a in axes)
        ctx.set(node.outputs[0], lay.moved(axis))
        return None


@register("Softmax", "LogSoftmax", "Hardmax")
class Softmax(OnLabelled):
    """Normalises along one axis: channel-wise unless that axis holds the channels."""

    def follow(self, node, ctx, lay):
        r = rank(node.inputs[0])
        if r is None:
            return "unknown rank"
        coerced = ctx.graph.opset < 13  # before opset 13: over axes axis..r-1, default 1
        axis = int(node.attrs.get("axis", 1 if coerced else -1))
        axis = axis + r if axis < 0 else axis
        if axis == 0 or (lay.axis >= axis if coerced else axis == lay.axis):
            return "normalises over the channel axis (softmax is not linear)"
        ctx.set(node.outputs[0], lay)
        return None
