"""Layout ops: they move, split, merge or select axes, and the channel layout follows.

Transpose moves the channel axis; Reshape/Flatten re-index features (units.layout.
reshape_layout follows each element's channel); Squeeze/Unsqueeze/Gather shift it; Concat and
Split along the channel axis join or divide channels; Slice/Pad/Resize along other axes keep it.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from scmopt.ops.edit import replace_constant
from scmopt.ops.elementwise import const_value, rank
from scmopt.ops.pooling import node_axes
from scmopt.ops.registry import Handler, OnLabelled, register
from scmopt.units.layout import Layout, reshape_layout, split_layout


def _norm(axes: list[int], r: int) -> list[int]:
    return [a + r if a < 0 else a for a in axes]


@register("Transpose")
class Transpose(OnLabelled):
    def follow(self, node, ctx, lay):
        r = rank(node.inputs[0])
        perm = node.attrs.get("perm")
        if perm is None:
            if r is None:
                return "unknown rank"
            perm = list(range(r))[::-1]
        perm = [int(p) for p in perm]
        if perm[0] != 0:
            return "transposes the batch axis"
        ctx.set(node.outputs[0], lay.moved(perm.index(lay.axis)))
        return None


def _static(shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape[1:])


@register("Flatten")
class Flatten(OnLabelled):
    def follow(self, node, ctx, lay):
        x = node.inputs[0]
        if int(node.attrs.get("axis", 1)) != 1:
            return "flatten axis != 1"
        if not _static(x.shape):
            return "dynamic spatial shape"
        out = [x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64))]
        new = reshape_layout(lay, x.shape, out)
        if isinstance(new, str):
            return new
        ctx.set(node.outputs[0], new)
        return None


Entry = int | tuple[str, int] | None  # a target dim: constant, ("dim", i) copy of input dim i


def target_parts(target: gs.Tensor, x: gs.Tensor) -> list[tuple[Entry, gs.Node | None, int]] | None:
    """A Reshape target as one entry per output axis, with where its value lives (the Concat
    node and its input index, None for a constant target), or None when it is not readable.
    Understood: constants (0 copies the input dim), and Concat of constants and
    [Unsqueeze] Gather(Shape(t), i) parts, as the TorchScript exporter builds run-time targets."""
    v = const_value(target)
    if v is not None:
        return [(("dim", i) if int(d) == 0 else int(d), None, i) for i, d in enumerate(v.ravel())]
    node = target.inputs[0] if target.inputs else None
    if node is None or node.op != "Concat":
        return None
    parts: list[tuple[Entry, gs.Node | None, int]] = []
    for k, part in enumerate(node.inputs):
        pv = const_value(part)
        if pv is not None:
            parts.extend((int(d), node, k) for d in pv.ravel())
            continue
        src = _shape_source(part)
        dim = None if src is None else _copied_dim(*src, x)
        if dim is not None:
            parts.append((("dim", dim), node, k))
        elif src is not None and _static_axis(*src):
            # the size of another tensor's static axis (timm's `reshape(B, N, C)` with C read
            # from the block input): a constant that compile may rewrite
            parts.append((int(src[0].shape[src[1]]), node, k))
        else:
            return None
    return parts


def _static_axis(s: gs.Tensor, i: int) -> bool:
    return s.shape is not None and 0 < i < len(s.shape) and isinstance(s.shape[i], int)


def _shape_source(t: gs.Tensor) -> tuple[gs.Tensor, int] | None:
    """(s, i) when `t` is one dim of a shape: [Unsqueeze] Gather(Shape(s), i) (TorchScript)
    or Shape(s, start=i, end=i+1) (dynamo)."""
    node = t.inputs[0] if t.inputs else None
    if node is not None and node.op == "Unsqueeze":
        node = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
    if node is None:
        return None
    if node.op == "Shape":
        s, i = node.inputs[0], int(node.attrs.get("start", 0))
        end = node.attrs.get("end")
        if end is None or int(end) - i != 1 or i < 0:
            return None
        return s, i
    if node.op == "Gather" and int(node.attrs.get("axis", 0)) == 0:
        idx = const_value(node.inputs[1])
        src = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
        if idx is None or idx.size != 1 or src is None or src.op != "Shape" or src.attrs:
            return None
        return src.inputs[0], int(idx.ravel()[0])
    return None


def _copied_dim(s: gs.Tensor, i: int, x: gs.Tensor) -> int | None:
    """i when dim i of `s` is dim i of `x`: equal when static; the batch (axis 0) always;
    symbolic dims are trusted by position (shape inference names the same run-time size
    differently in different tensors)."""
    if s is x or i == 0:
        return i
    if s.shape is None or x.shape is None or len(s.shape) <= i or len(x.shape) <= i:
        return None
    sd, xd = s.shape[i], x.shape[i]
    if isinstance(sd, int) or isinstance(xd, int):
        return i if sd == xd else None
    return i


@register("Reshape")
class Reshape(Handler):
    """Follows channels through the re-indexing; a split of the channel axis into (groups,
    members), like an attention head split, makes each group one unit."""

    def propagate(self, node, ctx):
        x, out = node.inputs[0], node.outputs[0]
        lay = ctx.lay(x)
        if lay is None:
            return None
        if ctx.only_first_input_labelled(node):
            return "labelled target shape"
        parts = target_parts(node.inputs[1], x)
        if parts is None:
            return "dynamic target shape"
        if x.shape is None or out.shape is None or len(parts) != len(out.shape):
            return "unknown shapes"
        # a dim copied from the same input axis keeps its (maybe symbolic) size
        shape = list(out.shape)
        for i, (e, _, _) in enumerate(parts):
            if isinstance(e, tuple) and e[1] == i < len(x.shape):
                shape[i] = x.shape[i]
        new = reshape_layout(lay, x.shape, shape)
        groups = None
        if isinstance(new, str):
            split = split_layout(lay, x.shape, shape)
            if isinstance(split, str):
                return new
            new, groups = split
        entry = parts[new.axis][0]
        if isinstance(entry, tuple) and not (
            entry[1] == lay.axis == new.axis and x.shape[lay.axis] == out.shape[new.axis]
        ):
            return "target copies the channel axis from a different input axis"
        for g in groups or []:
            for c in g[1:]:
                ctx.union([lay.labels[g[0]]], [lay.labels[c]])
        ctx.set(out, new)
        return None

    def slice(self, node, keep):
        out = node.outputs[0].name
        if not keep.changed(out):
            return
        axis = keep.layout(out).axis
        parts = target_parts(node.inputs[1], node.inputs[0])
        entry, concat, k = parts[axis]
        if not isinstance(entry, int) or entry <= 0:
            return  # -1 or a copy of the (sliced) input dim follows by itself
        kept = int(keep.features(out).sum())
        if concat is None:
            target = node.inputs[1].values.copy()
            target[axis] = kept
            replace_constant(node, 1, target, "sliced")
            return
        # a run-time target: a private copy of its Concat with the channel count rewritten
        # (the Concat may serve reshapes of other layers)
        offset = sum(len(np.ravel(const_value(t))) if const_value(t) is not None else 1
                     for t in concat.inputs[:k])  # fmt: skip
        part = const_value(concat.inputs[k])  # None: a static dim read from a Shape
        values = np.array([kept]) if part is None else part.copy().ravel()
        values[0 if part is None else axis - offset] = kept
        ins = list(concat.inputs)
        ins[k] = gs.Constant(f"{concat.name}__{node.name}_part", values.astype(np.int64))
        shape = gs.Variable(f"{node.name}__target", dtype=np.int64)
        keep.graph.nodes.append(gs.Node("Concat", f"{node.name}__target", attrs={"axis": 0},
                                        inputs=ins, outputs=[shape]))  # fmt: skip
        node.inputs[1] = shape


@register("Squeeze")
class Squeeze(OnLabelled):
    def follow(self, node, ctx, lay):
        x = node.inputs[0]
        r = rank(x)
        axes = node_axes(node)
        if axes == [] and x.shape is not None:
            axes = [i for i, d in enumerate(x.shape) if d == 1]
        if axes is None or r is None or not axes:
            return "unknown axes"
        axes = _norm(axes, r)
        if any(a in (0, lay.axis) for a in axes):
            return "acts on the batch or channel axis"
        ctx.set(node.outputs[0], lay.moved(lay.axis - sum(a < lay.axis for a in axes)))
        return None

    def slice(self, node, keep):
        # Squeeze() without axes drops every size-1 axis: once sliced to one channel it would
        # drop the channel axis too, so the inferred axes are written out
        x = node.inputs[0]
        if not keep.changed(x.name) or node_axes(node) != []:
            return
        axes = [i for i, d in enumerate(x.shape) if d == 1]
        if keep.opset < 13:
            node.attrs["axes"] = axes
            return
        const = gs.Constant(f"{node.name}__axes", np.array(axes, np.int64))
        if len(node.inputs) > 1:
            node.inputs[1] = const
        else:
            node.inputs.append(const)


@register("Unsqueeze")
class Unsqueeze(OnLabelled):
    def follow(self, node, ctx, lay):
        r_out = rank(node.outputs[0])
        axes = node_axes(node)
        if axes is None or r_out is None or not axes:
            return "unknown axes"
        axes = set(_norm(axes, r_out))
        kept = [a for a in range(r_out) if a not in axes]  # output position of each input axis
        if kept[0] != 0:
            return "acts on the batch or channel axis"
        ctx.set(node.outputs[0], lay.moved(kept[lay.axis]))
        return None


@register("Gather")
class Gather(OnLabelled):
    """Constant indices on an axis other than batch and channel (e.g. a ViT's class token)."""

    def follow(self, node, ctx, lay):
        x = node.inputs[0]
        idx = const_value(node.inputs[1])
        r = rank(x)
        if idx is None or r is None or ctx.only_first_input_labelled(node):
            return "dynamic indices"
        axis = int(node.attrs.get("axis", 0))
        axis = axis + r if axis < 0 else axis
        if axis in (0, lay.axis):
            return "gathers along the batch or channel axis"
        new = lay.axis if axis > lay.axis else lay.axis - 1 + idx.ndim
        ctx.set(node.outputs[0], lay.moved(new))
        return None


@register("Concat")
class Concat(Handler):
    def propagate(self, node, ctx):
        lays = [ctx.lay(t) for t in node.inputs]
        if all(lay is None for lay in lays):
            return None
        r = rank(node.outputs[0])
        if r is None:
            return "unknown rank"
        axis = int(node.attrs.get("axis", 1))
        axis = axis + r if axis < 0 else axis
        first = next(lay for lay in lays if lay is not None)
        if axis != first.axis:
            return self._other_axis(node, ctx, lays, first, axis)
        if any(lay is not None and lay.axis != axis for lay in lays):
            return "concatenation of different layouts"
        blocks = {lay.block for lay in lays if lay is not None}
        if len(blocks) != 1:
            return "concatenation of different layouts"
        blk = blocks.pop()
        chans, poss, labels, offset = [], [], [], 0
        for t, lay in zip(node.inputs, lays, strict=True):
            if lay is None:
                c = t.shape[axis] if t.shape is not None else None
                if not isinstance(c, int) or c % blk:
                    return "input of unknown channel count"
                labs = ctx.anonymous(t, c // blk, f"concatenated with unlabelled '{t.name}'")
                lay = Layout.simple(labs, axis, blk)
            chans.append(lay.chan + offset)
            poss.append(lay.pos)
            labels.extend(list(lay.labels))
            offset += lay.channels
        ctx.set(node.outputs[0], Layout(axis, np.concatenate(chans), np.concatenate(poss),
                                        np.asarray(labels)))  # fmt: skip
        return None

    def _other_axis(self, node, ctx, lays, first, axis):
        """Along another axis (tokens, positions): the channels of all parts are the same."""
        if axis == 0:
            return "concatenation along the batch axis"
        if any(lay is None or not lay.same_geometry(first) for lay in lays):
            return "concatenation along a non-channel axis with unlabelled parts"
        for lay in lays[1:]:
            ctx.union(first.labels, lay.labels)
        ctx.set(node.outputs[0], first)
        return None

    def slice(self, node, keep):
        # a producer whose channels were all removed leaves an empty input: drop it (its dead
        # branch is then removed by cleanup)
        kept = [t for t in node.inputs if keep.nonempty(t.name)]
        if len(kept) < len(node.inputs):
            node.inputs.clear()
            node.inputs.extend(kept)


@register("Split")
class Split(OnLabelled):
    def follow(self, node, ctx, lay):
        x = node.inputs[0]
        r = rank(x)
        if r is None:
            return "unknown rank"
        axis = int(node.attrs.get("axis", 0))
        axis = axis + r if axis < 0 else axis
        if axis == 0:
            return "split along the batch axis"
        if axis != lay.axis:
            for o in node.outputs:
                ctx.set(o, lay)
            return None
        sizes = [o.shape[axis] if o.shape is not None else None for o in node.outputs]
        if any(not isinstance(s, int) for s in sizes) or sum(sizes) != lay.features:
            return "split sizes unknown"
        start = 0
        for o, s in zip(node.outputs, sizes, strict=True):
            part = lay.chan[start : start + s]
            chans = np.unique(part)
            if (
                np.isin(lay.chan[:start], chans).any()
                or np.isin(lay.chan[start + s :], chans).any()
            ):
                return "split divides a channel's block"
            remap = {int(c): i for i, c in enumerate(chans)}
            labels = np.asarray([lay.labels[int(c)] for c in chans])
            ctx.set(o, Layout(axis, np.array([remap[int(c)] for c in part]),
                              lay.pos[start : start + s], labels))  # fmt: skip
            start += s
        return None

    def slice(self, node, keep):
        x = node.inputs[0]
        if not keep.changed(x.name):
            return
        axis = int(node.attrs.get("axis", 0))
        if axis < 0:
            axis += len(x.shape)
        if axis != keep.layout(x.name).axis:  # split along positions: sizes unchanged
            return
        sizes = np.array([int(keep.features(o.name).sum()) for o in node.outputs], np.int64)
        if keep.opset < 13:
            node.attrs["split"] = sizes.tolist()
            return
        node.attrs.pop("num_outputs", None)
        const = gs.Constant(f"{node.name}__split_sizes", sizes)
        if len(node.inputs) > 1:
            node.inputs[1] = const
        else:
            node.inputs.append(const)


@register("Slice")
class Slice(OnLabelled):
    def follow(self, node, ctx, lay):
        x = node.inputs[0]
        r = rank(x)
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 3 and node.inputs[3].name:
            av = const_value(node.inputs[3])
            axes = None if av is None else av.ravel().tolist()
        elif axes is None:
            starts = node.attrs.get("starts")
            n = len(starts) if starts is not None else None
            if n is None:
                sv = const_value(node.inputs[1])
                n = None if sv is None else sv.size
            axes = None if n is None else list(range(n))
        if axes is None or r is None or any(a in (0, lay.axis) for a in _norm(list(axes), r)):
            return "slices the channel axis"
        ctx.set(node.outputs[0], lay)
        return None


@register("Pad")
class Pad(OnLabelled):
    def follow(self, node, ctx, lay):
        x = node.inputs[0]
        pads = node.attrs.get("pads")
        if pads is None:
            pv = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
            pads = None if pv is None else pv.ravel().tolist()
        if len(node.inputs) > 3 and node.inputs[3].name:
            return "pad with explicit axes"
        r = rank(x)
        if pads is None or r is None or pads[lay.axis] != 0 or pads[lay.axis + r] != 0:
            return "pads the channel axis"
        if len(node.inputs) > 2 and node.inputs[2].name and const_value(node.inputs[2]) is None:
            return "non-constant pad value"
        ctx.set(node.outputs[0], lay)
        return None


@register("Resize", "Upsample")
class Resize(OnLabelled):
    def follow(self, node, ctx, lay):
        out = node.outputs[0]
        size = out.shape[lay.axis] if out.shape is not None and len(out.shape) > lay.axis else None
        if size != lay.features or lay.block != 1:
            return "resizes the channel axis"
        ctx.set(out, lay)
        return None

    def slice(self, node, keep):
        out = node.outputs[0].name
        if keep.changed(out) and len(node.inputs) > 3 and node.inputs[3].name:
            if const_value(node.inputs[3]) is None:
                # sizes built at run time (interpolate(size=x.shape[2:])): their channel entry
                # is read from the sliced tensor's Shape, so it already is the kept count; any
                # other source is caught by compile's check against the simulation
                return
            sizes = node.inputs[3].values.copy()
            sizes[keep.layout(out).axis] = int(keep.channels(out).sum())
            replace_constant(node, 3, sizes, "sliced")


@register("Shape")
class Shape(Handler):
    """Reads only the sizes: after slicing, a size taken from the channel axis is the kept
    count, which is what run-time shape arithmetic (view(B, T, -1), head counts) needs; any
    tensor built from it meets labelled channels only in handlers that check the layouts."""

    def propagate(self, node, ctx):
        return None
