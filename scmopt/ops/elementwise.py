"""Element-wise ops: activations pass a layout through; binary ops unify the labels of
matching channels (residual Add, squeeze-excite Mul) and slice per-channel constants."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from scmopt.ops.edit import replace_constant
from scmopt.ops.registry import Handler, OnLabelled, register

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Elu",
    "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Identity", "Dropout",
    "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Sin", "Cos", "Clip", "Cast", "Floor",
    "Ceil", "Round", "Sign", "Swish", "IsNaN", "IsInf", "Not",
)  # fmt: skip
BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu", "Where")


def const_value(t: gs.Tensor) -> np.ndarray | None:
    return t.values if isinstance(t, gs.Constant) else None


def rank(t: gs.Tensor) -> int | None:
    return None if t.shape is None else len(t.shape)


def operand_axis(operand_rank: int, out_rank: int, axis: int) -> int:
    """The axis of a broadcast operand that lines up with the output's `axis` (< 0: none)."""
    return axis - (out_rank - operand_rank)


@register(*UNARY)
class Unary(OnLabelled):
    """Channel-wise: the output has the input's layout."""

    def follow(self, node, ctx, lay):
        if ctx.only_first_input_labelled(node) or ctx.used_outputs_only_first(node):
            return "unsupported input/output use"
        if node.op == "Clip":
            for t in node.inputs[1:]:
                if t.name and (const_value(t) is None or const_value(t).size != 1):
                    return "non-scalar clip bounds"
        ctx.set(node.outputs[0], lay)
        return None


@register(*BINARY)
class Binary(Handler):
    """Labelled operands must share the layout (their channels are unified); constant operands
    broadcast over channels or hold one value per feature (sliced with them)."""

    def propagate(self, node, ctx):
        out = node.outputs[0]
        r = rank(out)
        labelled = [t for t in node.inputs if ctx.lay(t) is not None]
        if not labelled:
            return None
        if r is None:
            return "unknown rank"
        lay = ctx.lay(labelled[0])
        for t in node.inputs:
            other = ctx.lay(t)
            if other is not None:
                if rank(t) != r or not other.same_geometry(lay):
                    return "element-wise operands with different channel layouts"
                ctx.union(lay.labels, other.labels)
                continue
            shape = list(t.values.shape) if isinstance(t, gs.Constant) else t.shape
            if shape is None:
                return "operand of unknown shape"
            a = operand_axis(len(shape), r, lay.axis)
            if a < 0 or shape[a] == 1:
                continue
            if shape[a] != lay.features:
                return "operand broadcasts across channels"
            if not isinstance(t, gs.Constant):
                ctx.freeze(
                    lay.labels, f"combined with unsliceable tensor '{t.name}' at '{node.name}'"
                )
        ctx.set(out, lay)
        return None

    def slice(self, node, keep):
        out = node.outputs[0]
        if not keep.changed(out.name):
            return
        features = keep.features(out.name)
        axis = keep.layout(out.name).axis
        r = len(out.shape)
        for i, t in enumerate(node.inputs):
            if not isinstance(t, gs.Constant):
                continue
            a = operand_axis(t.values.ndim, r, axis)
            if a >= 0 and t.values.shape[a] == len(features):
                replace_constant(node, i, np.compress(features, t.values, axis=a), "sliced")
