"""Normalisation: per-channel normalisations are channel-wise and sliced; normalisations over
the channel axis (LayerNorm, RMSNorm, GroupNorm, LRN) mix channels and freeze them."""

from __future__ import annotations

import numpy as np

from scmopt.ops.edit import replace_constant
from scmopt.ops.elementwise import const_value, rank
from scmopt.ops.registry import Handler, OnLabelled, register

PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}
MIXING = (
    "LayerNormalization: it normalises over the hidden axis, so removing a channel changes "
    "every other channel"
)


@register(*PARAMS)
class ChannelNorm(OnLabelled):
    def follow(self, node, ctx, lay):
        if int(node.attrs.get("training_mode", 0)) or ctx.used_outputs_only_first(node):
            return "training-mode normalisation"
        if any(const_value(node.inputs[i]) is None for i in PARAMS[node.op]):
            return "non-constant normalisation parameters"
        if lay.axis != 1 or lay.block != 1:
            return "normalisation on a flattened layout"
        ctx.set(node.outputs[0], lay)
        return None

    def slice(self, node, keep):
        out = node.outputs[0].name
        if keep.changed(out):
            mask = keep.channels(out)
            for i in PARAMS[node.op]:
                replace_constant(node, i, np.compress(mask, node.inputs[i].values, 0), "sliced")


@register("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization",
          "SkipLayerNormalization")  # fmt: skip
class LayerNorm(OnLabelled):
    """Normalises over axis..rank-1: channel-wise only when the channels are not among them."""

    def follow(self, node, ctx, lay):
        r = rank(node.inputs[0])
        axis = int(node.attrs.get("axis", -1))
        if r is not None and axis < 0:
            axis += r
        if r is None or lay.axis >= axis:
            return MIXING.replace("LayerNormalization", node.op)
        if ctx.used_outputs_only_first(node) or ctx.only_first_input_labelled(node):
            return "unsupported input/output use"
        ctx.set(node.outputs[0], lay)
        return None


@register("GroupNormalization", "LRN", "LpNormalization", "MeanVarianceNormalization")
class MixingNorm(Handler):
    def propagate(self, node, ctx):
        if ctx.lay(node.inputs[0]) is None:
            return None
        return f"{node.op} normalises across channels"
