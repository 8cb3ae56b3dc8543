"""Layout: where the units of a tensor live, and the one pair of helpers that moves a cut to
the [N, C, P] view every analysis works in and back.

A labelled tensor has one *channel axis* (>= 1; axis 0 is the batch). Every feature on that
axis belongs to one channel (`chan[f]`) at one position of that channel's block (`pos[f]`):
NCHW convolutions have one feature per channel on axis 1; `Flatten` of [N, C, H, W] gives
C blocks of H*W features, channel-major; a channels-last flatten (`[N, H, W, C] -> [N, H*W*C]`)
interleaves them (chan = f % C); a [B, T, D] transformer activation has its channels on the
last axis, one feature each. The other non-batch axes are positions too (spatial, tokens).

The [N, C, P] view orders a channel's values block position first, then the other axes in
their order: value (c, j * R + r) is feature `order[c * block + j]` at flat position r of the
remaining axes. `to_ncp` / `from_ncp` do that on numpy arrays, `onnx_to_ncp` /
`onnx_from_ncp` emit the same as ONNX nodes (hooks); nothing else writes an axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

Emit = Callable[..., str]  # emit(op, inputs, output, **attrs) -> output name


@dataclass(eq=False)
class Layout:
    """Channel axis, channel and block position of every feature on it, labels per channel.

    `labels` are union-find labels while units are being found and unit ids afterwards.
    """

    axis: int
    chan: np.ndarray  # [F] channel index of each feature on `axis`
    pos: np.ndarray  # [F] position of the feature within its channel's block
    labels: Sequence  # [C] label (or unit id) per channel

    @classmethod
    def simple(cls, labels: Sequence, axis: int = 1, block: int = 1) -> Layout:
        """Channel-major blocks of `block` features on `axis`."""
        c = len(labels)
        return cls(axis, np.repeat(np.arange(c), block), np.tile(np.arange(block), c), labels)

    # sizes ---------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return len(self.labels)

    @property
    def features(self) -> int:
        return len(self.chan)

    @property
    def block(self) -> int:
        return self.features // max(self.channels, 1)

    @property
    def order(self) -> np.ndarray:
        """Feature indices in channel-major order (channel, then block position)."""
        return np.lexsort((self.pos, self.chan))

    @property
    def major(self) -> bool:
        """True when the features already are channel-major (no gather needed)."""
        return bool(np.array_equal(self.order, np.arange(self.features)))

    def same_geometry(self, other: Layout) -> bool:
        return (
            self.axis == other.axis
            and np.array_equal(self.chan, other.chan)
            and np.array_equal(self.pos, other.pos)
        )

    # derived layouts -----------------------------------------------------------------------
    def with_labels(self, labels: Sequence) -> Layout:
        return Layout(self.axis, self.chan, self.pos, labels)

    def moved(self, axis: int) -> Layout:
        return Layout(axis, self.chan, self.pos, self.labels)

    def feature_mask(self, channel_mask: np.ndarray) -> np.ndarray:
        """Bool mask over the features on the channel axis, from one over the channels."""
        return np.asarray(channel_mask, dtype=bool)[self.chan]

    def kept(self, channel_mask: np.ndarray) -> Layout:
        """The layout after slicing away the channels whose mask is False."""
        mask = np.asarray(channel_mask, dtype=bool)
        feats = self.feature_mask(mask)
        new_index = np.cumsum(mask) - 1
        labels = [lab for lab, k in zip(self.labels, mask, strict=True) if k]
        return Layout(self.axis, new_index[self.chan[feats]], self.pos[feats], labels)

    def weight_rows(self, w: np.ndarray) -> np.ndarray:
        """[F, O] rows indexed by features -> [C, block, O] in channel-major order."""
        rows = w if self.major else w[self.order]
        return rows.reshape(self.channels, self.block, -1)

    def feature_rows(self, w3: np.ndarray) -> np.ndarray:
        """Inverse of weight_rows: [C, block, O] -> [F, O] in the tensor's feature order."""
        flat = w3.reshape(self.features, -1)
        if self.major:
            return flat
        out = np.empty_like(flat)
        out[self.order] = flat
        return out

    # numpy view ----------------------------------------------------------------------------
    def _perm(self, rank: int) -> list[int]:
        return [0, self.axis] + [a for a in range(1, rank) if a != self.axis]

    def to_ncp(self, x: np.ndarray) -> np.ndarray:
        """[N, ...] tensor values -> [N, C, P]."""
        t = np.transpose(x, self._perm(x.ndim)).reshape(x.shape[0], self.features, -1)
        if not self.major:
            t = t[:, self.order]
        return t.reshape(x.shape[0], self.channels, -1)

    def from_ncp(self, v: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """[N, C, P] -> values of a tensor of `shape` (inverse of to_ncp)."""
        n = v.shape[0]
        t = v.reshape(n, self.features, -1)
        if not self.major:
            inv = np.empty_like(self.order)
            inv[self.order] = np.arange(self.features)
            t = t[:, inv]
        perm = self._perm(len(shape))
        t = t.reshape([n] + [shape[a] for a in perm[1:]])
        return np.transpose(t, np.argsort(perm))

    # ONNX view -----------------------------------------------------------------------------
    def onnx_to_ncp(self, x: str, rank: int, prefix: str, emit: Emit,
                    inits: list[onnx.TensorProto]) -> str:  # fmt: skip
        """Nodes computing the [N, C, P] view of tensor `x` (of the given rank)."""
        perm = self._perm(rank)
        if perm != list(range(rank)):
            x = emit("Transpose", [x], f"{prefix}::lead", perm=perm)
        if not self.major:
            flat = _const(inits, f"{prefix}::flat", [0, self.features, -1])
            x = emit("Reshape", [x, flat], f"{prefix}::flat3")
            idx = _const(inits, f"{prefix}::order", self.order)
            x = emit("Gather", [x, idx], f"{prefix}::major", axis=1)
        shape3 = _const(inits, f"{prefix}::shape3", [0, self.channels, -1])
        return emit("Reshape", [x, shape3], f"{prefix}::x3")

    def onnx_from_ncp(self, v: str, orig: str, rank: int, out: str, prefix: str, emit: Emit,
                      inits: list[onnx.TensorProto]) -> str:  # fmt: skip
        """Nodes writing the [N, C, P] values `v` back as tensor `out` shaped like `orig`."""
        perm = self._perm(rank)
        moved = perm != list(range(rank))
        if not self.major:
            flat = _const(inits, f"{prefix}::flat_back", [0, self.features, -1])
            v = emit("Reshape", [v, flat], f"{prefix}::flat_back3")
            inv = np.empty_like(self.order)
            inv[self.order] = np.arange(self.features)
            idx = _const(inits, f"{prefix}::inverse_order", inv)
            v = emit("Gather", [v, idx], f"{prefix}::feature_order", axis=1)
        if not moved:
            shp = emit("Shape", [orig], f"{prefix}::shape")
            return emit("Reshape", [v, shp], out)
        lead = emit("Transpose", [orig], f"{prefix}::lead_orig", perm=perm)
        shp = emit("Shape", [lead], f"{prefix}::shape")
        v = emit("Reshape", [v, shp], f"{prefix}::lead_back")
        return emit("Transpose", [v], out, perm=[int(a) for a in np.argsort(perm)])


def _const(inits: list[onnx.TensorProto], name: str, values) -> str:
    inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
    return name


def _channel_grid(lay: Layout, in_shape: Sequence, out_shape: Sequence):
    """(channel index of every element in the output's non-batch shape, number of leading
    dims kept as they are) or a refusal."""
    if len(in_shape) < 2 or len(out_shape) < 2:
        return "reshape to rank < 2"
    ins, outs = list(in_shape[1:]), list(out_shape[1:])
    # identical leading dims (after the batch) that do not hold channels may be dynamic
    lead = 0
    while lead < min(len(ins), len(outs)) - 1 and ins[lead] == outs[lead] and lead + 1 < lay.axis:
        lead += 1
    ins, outs = ins[lead:], outs[lead:]
    if not all(isinstance(d, int) and d > 0 for d in ins + outs):
        return "dynamic shapes around the channel axis"
    if int(np.prod(ins)) != int(np.prod(outs)):
        return "element counts differ"
    grid_shape = [1] * len(ins)
    grid_shape[lay.axis - 1 - lead] = lay.features
    return np.broadcast_to(lay.chan.reshape(grid_shape), ins).reshape(outs), lead


def reshape_layout(lay: Layout, in_shape: Sequence, out_shape: Sequence) -> Layout | str:
    """The layout after a Reshape/Flatten from `in_shape` to `out_shape` (batch dims included),
    or a refusal. The channel of every element is followed through the row-major re-indexing;
    the output's channel axis is the one axis along which the channel varies."""
    if len(in_shape) == len(out_shape) and all(
        a == b and a is not None for a, b in zip(in_shape, out_shape, strict=True)
    ):  # the same dims (symbols too): a no-op reshape (SDPA lowerings' Reshape(B, -1, T, Dh))
        return lay
    grid = _channel_grid(lay, in_shape, out_shape)
    if isinstance(grid, str):
        return grid
    chan, lead = grid
    outs = chan.shape
    axes = [b for b in range(len(outs)) if _varies(chan, b)]
    if not axes and lay.channels == 1:  # one channel fills the tensor: keep it on an axis
        axes = [min(lay.axis - 1 - lead, len(outs) - 1)]
    if len(axes) != 1:
        return "reshape mixes channels with other axes"
    b = axes[0]
    line = np.moveaxis(chan, b, 0).reshape(outs[b], -1)
    if not (line == line[:, :1]).all():
        return "reshape mixes channels with other axes"
    new_chan = line[:, 0]
    # block position along the new axis: rank among the features of the same channel
    new_pos = np.zeros_like(new_chan)
    seen: dict[int, int] = {}
    for f, c in enumerate(new_chan):
        new_pos[f] = seen.get(int(c), 0)
        seen[int(c)] = new_pos[f] + 1
    if len(set(seen.values())) != 1:
        return "channels have unequal blocks after the reshape"
    return Layout(b + 1 + lead, new_chan, new_pos, lay.labels)


def split_layout(
    lay: Layout, in_shape: Sequence, out_shape: Sequence
) -> tuple[Layout, list[list[int]]] | str:
    """A Reshape that splits the channel axis into two adjacent axes (groups, members), as
    the head split [B, T, H*Dh] -> [B, T, H, Dh] of attention: the channels of each group
    become one channel of the output (on the group axis) and must be removed together.
    Returns (layout, groups of input channel indices to unify) or a refusal."""
    grid = _channel_grid(lay, in_shape, out_shape)
    if isinstance(grid, str):
        return grid
    chan, lead = grid
    axes = [b for b in range(chan.ndim) if _varies(chan, b)]
    if len(axes) != 2 or axes[1] != axes[0] + 1:
        return "reshape mixes channels with other axes"
    b = axes[0]
    moved = np.moveaxis(np.moveaxis(chan, b, 0), b + 1, 1)
    flat = moved.reshape(moved.shape[0], moved.shape[1], -1)
    if not (flat == flat[:, :, :1]).all():
        return "reshape mixes channels with other axes"
    groups = [sorted({int(c) for c in flat[i, :, 0]}) for i in range(flat.shape[0])]
    if sum(len(g) for g in groups) != len({c for g in groups for c in g}):
        return "reshape splits a channel across groups"
    n = len(groups)
    labels = [lay.labels[g[0]] for g in groups]
    return Layout(b + 1 + lead, np.arange(n), np.zeros(n, dtype=np.int64), labels), groups


def _varies(grid: np.ndarray, axis: int) -> bool:
    if grid.shape[axis] == 1:
        return False
    first = np.take(grid, [0], axis=axis)
    return bool((grid != first).any())


__all__ = ["Layout", "reshape_layout", "split_layout"]
