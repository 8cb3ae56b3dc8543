"""Shared bookkeeping for the channel passes: which features of a tensor survive a plan."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from scmopt.units.analysis import UnitGraph
from scmopt.units.layout import Layout


class Survivors:
    """Kept-channel masks of every labelled tensor, for a set of removed units."""

    def __init__(self, ug: UnitGraph, removed: set[str], opset: int = 17,
                 graph: gs.Graph | None = None) -> None:  # fmt: skip
        self.ug = ug
        self.graph = graph  # the graph being rewritten, for passes that add nodes
        self.removed = removed
        self.opset = opset

    def layout(self, tensor: str) -> Layout | None:
        return self.ug.layouts.get(tensor)

    def channels(self, tensor: str) -> np.ndarray | None:
        """Bool mask over the channels of `tensor` (None if it has no layout)."""
        lay = self.ug.layouts.get(tensor)
        if lay is None:
            return None
        return np.array([u not in self.removed for u in lay.labels], dtype=bool)

    def features(self, tensor: str) -> np.ndarray | None:
        """Bool mask over the features on the tensor's channel axis."""
        mask = self.channels(tensor)
        if mask is None:
            return None
        return self.ug.layouts[tensor].feature_mask(mask)

    def changed(self, tensor: str) -> bool:
        mask = self.channels(tensor)
        return mask is not None and not mask.all()

    def nonempty(self, tensor: str) -> bool:
        mask = self.channels(tensor)
        return mask is None or bool(mask.any())

    def produces(self, node: gs.Node) -> bool:
        """True when the node's output channels are its own (a producer), not its input's."""
        x = node.inputs[0].name
        cut = self.ug.cuts.get(x)
        return x not in self.ug.layouts or (cut is not None and node.name in cut.consumers)
