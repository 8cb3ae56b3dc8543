"""Channel-coupling analysis: which channels of which tensors are removable units.

Every channel of every labelled tensor gets a label, and every labelled tensor a Layout
(scmopt.units.layout: channel axis, features per channel). One pass over the toposorted graph
asks each node's handler in the op table (scmopt.ops) how labels propagate: producers (Conv,
Gemm, MatMul with constant weights) create fresh labels; channel-wise ops pass them through;
element-wise combinations (residual Add, squeeze-excite Mul) unify the labels of matching
channels; Transpose, Reshape, Concat, Split re-arrange them. A *unit* is an equivalence class
of labels: removing it means slicing its channel out of every tensor it occupies. A *cut* is a
labelled tensor read by a linear consumer; there the plan replaces removed units by constants
or folds and the compiler absorbs the replacement into the consumer's weights and bias.

A unit is frozen (kept, with a reason) when any of its channels reaches an op that refuses it
(LayerNorm, Softmax over channels, grouped convolutions, graph outputs, ops of other domains,
ops nobody registered, control flow bodies, ...). Because removed channels only ever flow
through channel-wise ops into cuts, compiling a plan is exact.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from scmopt.io.graph import canonicalize
from scmopt.ops.control import freeze_captured
from scmopt.ops.registry import lookup
from scmopt.units.layout import Layout


@dataclass
class Cut:
    """A tensor read by linear consumers; the plan acts on its channels."""

    tensor: str
    layout: Layout  # labels are unit ids
    spatial: tuple[int, ...] | None  # static dims of the other non-batch axes, None if dynamic
    consumers: list[str] = field(default_factory=list)
    rank: int | None = None

    @property
    def units(self) -> list[str]:
        """Unit id at each channel position."""
        return list(self.layout.labels)

    @functools.cached_property
    def unit_channels(self) -> dict[str, list[int]]:
        """Each unit's channel positions, units in channel order (the fits and the search ask
        for a few units at a time, thousands of times per round)."""
        out: dict[str, list[int]] = {}
        for i, u in enumerate(self.layout.labels):
            out.setdefault(u, []).append(i)
        return out

    @functools.cached_property
    def first_channels(self) -> np.ndarray:
        """First channel of each unit, in unit_channels order."""
        return np.array([c[0] for c in self.unit_channels.values()], dtype=int)

    @functools.cached_property
    def unit_index(self) -> dict[str, int]:
        """Each unit's place in unit_channels order (the rows of first_channels)."""
        return {u: i for i, u in enumerate(self.unit_channels)}

    @property
    def block(self) -> int:
        """Features per channel on the channel axis (flattened layouts), else 1."""
        return self.layout.block

    @property
    def channels(self) -> int:
        return self.layout.channels

    @property
    def positions(self) -> int | None:
        """Values per channel per sample (block x other axes), None when dynamic."""
        if self.spatial is None:
            return None
        return self.block * int(np.prod(self.spatial, dtype=np.int64))


@dataclass
class Unit:
    id: str
    group: str
    producers: list[tuple[str, int]]  # (node name, output channel)
    cuts: list[str]  # cut tensors where the unit is present
    frozen: str | None = None
    kind: str = "neuron"  # "neuron" (dense), "channel" (conv), "token" (FFN), "head"

    @property
    def prunable(self) -> bool:
        return self.frozen is None and bool(self.cuts)


@dataclass
class Group:
    """Units that share tensors (a layer's channels; a whole residual stage; a dense block)."""

    id: str
    units: list[str]
    cuts: list[str]
    producers: list[str]
    consumers: list[str]


@dataclass
class UnitGraph:
    model: onnx.ModelProto  # canonical model the analysis refers to
    units: dict[str, Unit]
    cuts: dict[str, Cut]
    groups: dict[str, Group]
    layouts: dict[str, Layout]  # every labelled tensor -> its layout (labels are unit ids)
    _nodes: dict[str, gs.Node] = field(default_factory=dict, repr=False, compare=False)

    def weight_views(self, cut: str) -> list[np.ndarray]:
        """Each consumer's weights on `cut` as [C, block, R] (the consumers' op handlers). The
        graph is imported once (curvature norms, couplings and layer screens ask every round);
        the views are made on demand, not kept (they are float64 copies of the weights)."""
        if not self._nodes:
            self._nodes.update({n.name: n for n in gs.import_onnx(self.model).nodes})
        layout = self.cuts[cut].layout
        views = []
        for name in self.cuts[cut].consumers:
            node = self._nodes[name]
            views.append(lookup(node.domain, node.op).weight_view(node, layout))
        return views

    @property
    def prunable(self) -> list[str]:
        return [u.id for u in self.units.values() if u.prunable]

    def frozen(self) -> dict[str, str]:
        return {u.id: u.frozen for u in self.units.values() if u.frozen}

    def summary(self) -> dict[str, int | float]:
        total = len(self.units)
        pr = len(self.prunable)
        return {"units": total, "prunable": pr, "frozen": total - pr,
                "prunable_fraction": pr / total if total else 0.0}  # fmt: skip


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # earliest label stays the root


class Context:
    """What op handlers may read and do while labels propagate (see scmopt.ops.registry)."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.uf = _UnionFind()
        self.layouts: dict[str, Layout] = {}  # tensor -> layout with int labels
        self.origin: list[tuple[str, int] | None] = []  # label -> (producer, channel)
        self.reason: dict[int, str] = {}  # label -> why frozen
        self.anon: dict[int, str] = {}  # label -> name for labels of unlabelled tensors
        self.cuts: dict[str, list[str]] = {}  # tensor -> consumer names
        self.refused: dict[str, str] = {}  # node name -> why it refused its labelled inputs
        self.heads: set[int] = set()  # labels unified through a product of two activations

    def fresh(self, node: str | None, n: int) -> np.ndarray:
        labs = np.array([self.uf.add() for _ in range(n)], dtype=np.int64)
        self.origin.extend([(node, c) if node else None for c in range(n)])
        return labs

    def freeze(self, labs, why: str) -> None:
        for lab in labs:
            self.reason.setdefault(int(lab), why)

    def union(self, a, b) -> None:
        for x, y in zip(a, b, strict=True):
            self.uf.union(int(x), int(y))

    def lay(self, t: gs.Tensor) -> Layout | None:
        return self.layouts.get(t.name)

    def set(self, t: gs.Tensor, layout: Layout) -> None:
        self.layouts[t.name] = layout

    def anonymous(self, t: gs.Tensor, n: int, why: str) -> np.ndarray:
        labs = self.fresh(None, n)
        for c, lab in enumerate(labs):
            self.anon[int(lab)] = f"{t.name}:{c}"
        self.freeze(labs, why)
        return labs

    def cut(self, x: gs.Tensor, consumer: gs.Node, axis: int) -> None:
        """Registers `x` as a cut read on `axis`. Channels computed by ops we cannot slice are
        still units of the network (frozen ones); exogenous graph inputs are not."""
        if self.lay(x) is None:
            c = x.shape[axis] if x.shape is not None and len(x.shape) > axis else None
            if not isinstance(c, int) or x in self.graph.inputs:
                return
            src, refusal = _origin(x, self.refused)
            what = f"{src.op} '{src.name}'" if src is not None else f"'{x.name}'"
            why = f"channels come from {what}, which cannot be sliced"
            labs = self.anonymous(x, c, f"{why} ({refusal})" if refusal else why)
            self.set(x, Layout.simple(labs, axis))
        self.cuts.setdefault(x.name, []).append(consumer.name)

    def only_first_input_labelled(self, node: gs.Node) -> bool:
        return any(self.lay(t) is not None for t in node.inputs[1:])

    def used_outputs_only_first(self, node: gs.Node) -> bool:
        return any(o.outputs or o in self.graph.outputs for o in node.outputs[1:])

    def refuse(self, node: gs.Node, why: str) -> None:
        """The node cannot be sliced through: its labelled inputs freeze, outputs unlabelled."""
        for t in node.inputs:
            lay = self.lay(t)
            if lay is not None:
                self.freeze(lay.labels, why)
        for out in node.outputs:
            self.layouts.pop(out.name, None)

    def run(self) -> None:
        for node in self.graph.nodes:
            handler = lookup(node.domain, node.op)
            if handler is None:
                domain = node.domain if node.domain not in (None, "", "ai.onnx") else ""
                what = f"{domain}::{node.op}" if domain else node.op
                self.refuse(node, f"feeds {what} '{node.name}'")
                freeze_captured(node, self)
                continue
            refusal = handler.propagate(node, self)
            if refusal:
                self.refused[node.name] = refusal
                self.refuse(node, f"{refusal} at {node.op} '{node.name}'")
        for out in self.graph.outputs:
            lay = self.layouts.get(out.name)
            if lay is not None:
                self.freeze(lay.labels, f"reaches graph output '{out.name}'")


def _origin(x: gs.Tensor, refused: dict[str, str]) -> tuple[gs.Node | None, str | None]:
    """The op that left `x` unlabelled, and its refusal: walk up through the ops that pass
    labels (their input was unlabelled too) to a refusing or unregistered op."""
    node = x.inputs[0] if x.inputs else None
    for _ in range(256):
        if node is None or node.name in refused or lookup(node.domain, node.op) is None:
            break
        srcs = [t for t in node.inputs if t.inputs and not isinstance(t, gs.Constant)]
        if not srcs or lookup(node.domain, node.op).linear:
            break
        node = srcs[0].inputs[0]
    return node, (refused.get(node.name) if node is not None else None)


def analyze(model: onnx.ModelProto, canonical: bool = False) -> UnitGraph:
    """Finds the units, cuts and groups of `model` (canonicalised first unless told it is)."""
    model = model if canonical else canonicalize(model)
    graph = gs.import_onnx(copy.deepcopy(model))
    ctx = Context(graph)
    ctx.run()
    return _collect(model, ctx)


def _collect(model: onnx.ModelProto, ctx: Context) -> UnitGraph:
    uf = ctx.uf
    n = len(uf.parent)
    roots = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    frozen: dict[int, str] = {}
    for lab, why in ctx.reason.items():
        frozen.setdefault(int(roots[lab]), why)
    producers: dict[int, list[tuple[str, int]]] = {}
    for lab, org in enumerate(ctx.origin):
        if org is not None:
            producers.setdefault(int(roots[lab]), []).append(org)

    def uid(root: int) -> str:
        org = ctx.origin[root]
        return f"{org[0]}:{org[1]}" if org is not None else ctx.anon[root]

    layouts = {
        t: lay.with_labels([uid(int(roots[lab])) for lab in lay.labels])
        for t, lay in ctx.layouts.items()
    }
    # groups: units that share a tensor
    gfind = _UnionFind()
    ids: dict[str, int] = {}
    for lay in layouts.values():
        first = None
        for u in lay.labels:
            if u not in ids:
                ids[u] = gfind.add()
            if first is None:
                first = ids[u]
            gfind.union(first, ids[u])
    units: dict[str, Unit] = {}
    group_of: dict[int, str] = {}
    # A unit is a channel of a cut (DESIGN §2): labels that never reach a linear consumer, such
    # as the logits, are outcome variables, not mechanisms, and are not counted.
    in_cuts = {int(r) for t in ctx.cuts for r in roots[ctx.layouts[t].labels]}
    for root in sorted(in_cuts):
        u = uid(root)
        g = gfind.find(ids[u])
        gname = group_of.setdefault(g, f"G{len(group_of)}")
        units[u] = Unit(u, gname, producers.get(root, []), [], frozen.get(root))
    heads = {uid(int(roots[lab])) for lab in ctx.heads}
    cuts: dict[str, Cut] = {}
    shapes = {vi.name: vi for vi in model.graph.value_info}
    for t, consumers in ctx.cuts.items():
        lay = layouts[t]
        spatial, r = _spatial(shapes.get(t), lay.axis)
        cuts[t] = Cut(t, lay, spatial, consumers, r)
        kind = "channel" if lay.axis == 1 and (r or 0) > 2 else "neuron"
        if r is not None and r > 2 and lay.axis == r - 1:
            kind = "token"
        for u in set(lay.labels):
            units[u].cuts.append(t)
            new = "head" if u in heads else kind
            # a unit in several cuts (a residual stream) takes its most specific kind
            if _KIND_RANK[new] > _KIND_RANK[units[u].kind]:
                units[u].kind = new
    groups: dict[str, Group] = {}
    for u in units.values():
        g = groups.setdefault(u.group, Group(u.group, [], [], [], []))
        g.units.append(u.id)
        for p, _ in u.producers:
            if p not in g.producers:
                g.producers.append(p)
        for t in u.cuts:
            if t not in g.cuts:
                g.cuts.append(t)
                g.consumers.extend(c for c in cuts[t].consumers if c not in g.consumers)
    return UnitGraph(model, units, cuts, groups, layouts)


_KIND_RANK = {"neuron": 0, "channel": 1, "token": 2, "head": 3}


def _spatial(
    vi: onnx.ValueInfoProto | None, axis: int
) -> tuple[tuple[int, ...] | None, int | None]:
    """(static dims of the non-batch axes other than `axis`, or None; the tensor's rank)."""
    if vi is None:
        return None, None
    dims = vi.type.tensor_type.shape.dim
    rest = [d for i, d in enumerate(dims) if i not in (0, axis)]
    if not all(d.HasField("dim_value") for d in rest):
        return None, len(dims)
    return tuple(d.dim_value for d in rest), len(dims)
