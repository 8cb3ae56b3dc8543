"""Shared bookkeeping for the channel passes: which positions of a tensor survive a plan."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from scmopt.units.analysis import UnitGraph


class Survivors:
    """Kept-channel masks of every labelled tensor, for a set of removed units."""

    def __init__(self, ug: UnitGraph, removed: set[str]) -> None:
        self.ug = ug
        self.removed = removed

    def channels(self, tensor: str) -> np.ndarray | None:
        """Bool mask over the channel positions of `tensor` (None if it has no layout)."""
        lay = self.ug.layouts.get(tensor)
        if lay is None:
            return None
        return np.array([u not in self.removed for u in lay], dtype=bool)

    def features(self, tensor: str) -> np.ndarray | None:
        """Bool mask over axis-1 features (channels repeated `block` times)."""
        mask = self.channels(tensor)
        if mask is None:
            return None
        return np.repeat(mask, self.ug.blocks[tensor])

    def changed(self, tensor: str) -> bool:
        mask = self.channels(tensor)
        return mask is not None and not mask.all()


def replace_constant(node: gs.Node, index: int, values: np.ndarray, tag: str) -> None:
    """Gives input `index` of `node` a fresh constant (weights may be shared between nodes)."""
    old = node.inputs[index]
    node.inputs[index] = gs.Constant(f"{old.name}__{tag}_{node.name}", np.ascontiguousarray(values))


def take(values: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    return np.compress(mask, values, axis=axis)
