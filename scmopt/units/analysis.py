"""Channel-coupling analysis: which channels of which tensors are removable units.

Every channel of every tensor gets a label. Producers (Conv, Gemm, MatMul with constant weights)
create fresh labels; channel-wise ops pass labels through; ops that combine two tensors
element-wise (residual Add/Sum, squeeze-excite Mul) unify the labels of matching channels;
Concat/Split/Flatten re-arrange them. A *unit* is an equivalence class of labels: removing it
means slicing its channel out of every tensor it occupies. A *cut* is a labelled tensor read by a
linear consumer (Conv, Gemm, MatMul); there the plan replaces removed units by constants or folds
and the compiler absorbs the replacement into the consumer's weights and bias.

A unit is frozen (kept, with a reason) when any of its channels reaches an op we cannot slice
(LRN, Softmax over channels, Transpose, graph outputs, grouped convolutions, ...). Because
removed channels only ever flow through channel-wise ops into cuts, compiling a plan is exact.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from scmopt.io.graph import canonicalize

UNARY = {
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Elu",
    "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Identity", "Dropout",
    "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Sin", "Cos", "Clip", "Cast",
}  # fmt: skip
POOLS = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu"}
NORMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}
REDUCE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2"}
LINEAR = {"Conv", "Gemm", "MatMul"}


@dataclass
class Cut:
    """A tensor read by linear consumers; the plan acts on its channels."""

    tensor: str
    units: list[str]  # unit id at each channel position
    block: int  # features per channel on axis 1 (Flatten layouts), else 1
    spatial: tuple[int, ...] | None  # static dims after axis 1, None when dynamic
    consumers: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return len(self.units)

    @property
    def positions(self) -> int | None:
        """Values per channel per sample (block x spatial), None when dynamic."""
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
    layouts: dict[str, list[str]]  # tensor -> unit id per channel position
    blocks: dict[str, int]  # tensor -> features per channel on axis 1

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


def const_value(t: gs.Tensor) -> np.ndarray | None:
    return t.values if isinstance(t, gs.Constant) else None


def node_axes(node: gs.Node, index: int = 1) -> list[int] | None:
    """`axes` from the attribute (old opsets) or the constant input (new opsets)."""
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(node.inputs) > index and node.inputs[index].name:
        v = const_value(node.inputs[index])
        return None if v is None else [int(a) for a in v.ravel()]
    return []


def rank(t: gs.Tensor) -> int | None:
    return None if t.shape is None else len(t.shape)


class _Analysis:
    """One pass over the toposorted graph assigning labels (see module docstring)."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.uf = _UnionFind()
        self.labels: dict[str, np.ndarray] = {}  # tensor -> label per channel
        self.block: dict[str, int] = {}
        self.origin: list[tuple[str, int] | None] = []  # label -> (producer, channel)
        self.reason: dict[int, str] = {}  # label -> why frozen
        self.anon: dict[int, str] = {}  # label -> name for labels of unlabelled tensors
        self.cuts: dict[str, list[str]] = {}  # tensor -> consumer names

    # label helpers -------------------------------------------------------------------------
    def fresh(self, node: str | None, n: int) -> np.ndarray:
        labs = np.array([self.uf.add() for _ in range(n)], dtype=np.int64)
        self.origin.extend([(node, c) if node else None for c in range(n)])
        return labs

    def freeze(self, labs: np.ndarray, why: str) -> None:
        for lab in labs:
            self.reason.setdefault(int(lab), why)

    def lab(self, t: gs.Tensor) -> np.ndarray | None:
        return self.labels.get(t.name)

    def set(self, t: gs.Tensor, labs: np.ndarray, block: int = 1) -> None:
        self.labels[t.name] = labs
        self.block[t.name] = block

    def channels(self, t: gs.Tensor) -> int | None:
        if t.shape is None or len(t.shape) < 2 or not isinstance(t.shape[1], int):
            return None
        return int(t.shape[1])

    def anonymous(self, t: gs.Tensor, n: int, why: str) -> np.ndarray:
        labs = self.fresh(None, n)
        for c, lab in enumerate(labs):
            self.anon[int(lab)] = f"{t.name}:{c}"
        self.freeze(labs, why)
        return labs

    def unknown(self, node: gs.Node, why: str | None = None) -> None:
        """Node we cannot slice through: its labelled inputs are frozen, outputs unlabelled."""
        why = why or f"feeds {node.op} '{node.name}'"
        for t in node.inputs:
            labs = self.lab(t)
            if labs is not None:
                self.freeze(labs, why)

    # main loop -----------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.graph.nodes:
            handler = getattr(self, f"op_{node.op}", None)
            if node.domain not in (None, "", "ai.onnx"):
                handler = None
            if handler is None:
                if node.op in UNARY or node.op in POOLS:
                    handler = self.op_unary
                elif node.op in BINARY:
                    handler = self.op_binary
                elif node.op in REDUCE:
                    handler = self.op_reduce
                elif node.op in NORMS:
                    handler = self.op_norm
            if handler is None:
                self.unknown(node)
                self._freeze_captured(node)
                continue
            refusal = handler(node)
            if refusal:
                self.unknown(node, f"{refusal} at {node.op} '{node.name}'")
                for out in node.outputs:
                    self.labels.pop(out.name, None)
        for out in self.graph.outputs:
            labs = self.labels.get(out.name)
            if labs is not None:
                self.freeze(labs, f"reaches graph output '{out.name}'")

    def _freeze_captured(self, node: gs.Node) -> None:
        """Control flow (If/Loop/Scan) may read outer tensors inside its subgraphs."""
        for attr in node.attrs.values():
            subgraphs = attr if isinstance(attr, list) else [attr]
            for sub in subgraphs:
                if not isinstance(sub, gs.Graph):
                    continue
                for inner in sub.nodes:
                    for t in inner.inputs:
                        labs = self.lab(t)
                        if labs is not None:
                            self.freeze(labs, f"read inside {node.op} '{node.name}'")
                    self._freeze_captured(inner)

    def _only_first_input_labelled(self, node: gs.Node) -> str | None:
        if any(self.lab(t) is not None for t in node.inputs[1:]):
            return "labelled tensor in a parameter position"
        return None

    def _used_outputs_only_first(self, node: gs.Node) -> str | None:
        if any(o.outputs or o in self.graph.outputs for o in node.outputs[1:]):
            return "secondary output in use"
        return None

    # linear ops ----------------------------------------------------------------------------
    def op_Conv(self, node: gs.Node) -> str | None:
        x, w = node.inputs[0], node.inputs[1]
        wv = const_value(w)
        if wv is None or (len(node.inputs) > 2 and const_value(node.inputs[2]) is None):
            return "non-constant weights"
        if self._only_first_input_labelled(node):
            return "labelled weights"
        group = int(node.attrs.get("group", 1))
        labs = self.lab(x)
        cin = wv.shape[1] * group
        if labs is not None and (self.block[x.name] != 1 or len(labs) != cin):
            return "unexpected input layout"
        if group == 1:
            self._cut(x, node)
            self.set(node.outputs[0], self.fresh(node.name, wv.shape[0]))
            return None
        if group == cin and wv.shape[0] == cin and wv.shape[1] == 1:  # depthwise: channel-wise
            if labs is None:
                labs = self.fresh(node.name, cin)
                self.freeze(labs, f"depthwise conv '{node.name}' on an unlabelled input")
            self.set(node.outputs[0], labs)
            return None
        if labs is not None:
            self.freeze(labs, f"feeds grouped conv '{node.name}'")
        out = self.fresh(node.name, wv.shape[0])
        self.freeze(out, f"output of grouped conv '{node.name}'")
        self.set(node.outputs[0], out)
        return None

    def op_Gemm(self, node: gs.Node) -> str | None:
        a, b = node.inputs[0], node.inputs[1]
        bv = const_value(b)
        if bv is None or int(node.attrs.get("transA", 0)):
            return "non-constant or transposed operands"
        n_out = bv.shape[0] if int(node.attrs.get("transB", 0)) else bv.shape[1]
        if len(node.inputs) > 2 and node.inputs[2].name:
            cv = const_value(node.inputs[2])
            if cv is None or cv.size not in (1, n_out):
                return "bias that is not a constant vector"
        if self._only_first_input_labelled(node):
            return "labelled weights"
        return self._dense(node, a, n_out)

    def op_MatMul(self, node: gs.Node) -> str | None:
        a, b = node.inputs
        bv = const_value(b)
        if bv is None or bv.ndim != 2 or rank(a) != 2:
            return "not a dense layer (activation operand or rank > 2)"
        if self._only_first_input_labelled(node):
            return "labelled weights"
        return self._dense(node, a, bv.shape[1])

    def _cut(self, x: gs.Tensor, consumer: gs.Node) -> None:
        """Registers `x` as a cut. Channels computed by ops we cannot slice are still units of
        the network (frozen ones); exogenous graph inputs are not."""
        if self.lab(x) is None:
            c = self.channels(x)
            if c is None or x in self.graph.inputs:
                return
            src = self._origin(x)
            what = f"{src.op} '{src.name}'" if src is not None else f"'{x.name}'"
            self.set(x, self.anonymous(x, c, f"channels come from {what}, which cannot be sliced"))
        self.cuts.setdefault(x.name, []).append(consumer.name)

    def _origin(self, x: gs.Tensor) -> gs.Node | None:
        """The op that made `x` unlabelled: walk up through channel-wise ops."""
        node = x.inputs[0] if x.inputs else None
        while node is not None and (node.op in UNARY or node.op in POOLS or node.op in NORMS):
            src = node.inputs[0]
            if not src.inputs:
                break
            node = src.inputs[0]
        return node

    def _dense(self, node: gs.Node, a: gs.Tensor, n_out: int) -> str | None:
        self._cut(a, node)
        self.set(node.outputs[0], self.fresh(node.name, n_out))
        return None

    # channel-wise ops ----------------------------------------------------------------------
    def op_unary(self, node: gs.Node) -> str | None:
        labs = self.lab(node.inputs[0])
        if labs is None:
            return None
        if self._only_first_input_labelled(node) or self._used_outputs_only_first(node):
            return "unsupported input/output use"
        if node.op == "Clip":
            for t in node.inputs[1:]:
                if t.name and (const_value(t) is None or const_value(t).size != 1):
                    return "non-scalar clip bounds"
        self.set(node.outputs[0], labs, self.block[node.inputs[0].name])
        return None

    def op_norm(self, node: gs.Node) -> str | None:
        labs = self.lab(node.inputs[0])
        if labs is None:
            return None
        if int(node.attrs.get("training_mode", 0)) or self._used_outputs_only_first(node):
            return "training-mode normalisation"
        if any(const_value(node.inputs[i]) is None for i in NORMS[node.op]):
            return "non-constant normalisation parameters"
        if self.block[node.inputs[0].name] != 1:
            return "normalisation on a flattened layout"
        self.set(node.outputs[0], labs)
        return None

    def op_binary(self, node: gs.Node) -> str | None:
        out = node.outputs[0]
        r = rank(out)
        labelled = [t for t in node.inputs if self.lab(t) is not None]
        if not labelled:
            return None
        if r is None:
            return "unknown rank"
        first = labelled[0]
        labs, blk = self.lab(first), self.block[first.name]
        width = len(labs) * blk
        for t in node.inputs:
            other = self.lab(t)
            if other is not None:
                if rank(t) != r or len(other) != len(labs) or self.block[t.name] != blk:
                    return "element-wise operands with different channel layouts"
                for a, b in zip(labs, other, strict=True):
                    self.uf.union(int(a), int(b))
                continue
            shape = list(t.values.shape) if isinstance(t, gs.Constant) else t.shape
            if shape is None:
                return "operand of unknown shape"
            axis = len(shape) - (r - 1)
            if axis < 0 or shape[axis] == 1:
                continue
            if shape[axis] != width:
                return "operand broadcasts across channels"
            if not isinstance(t, gs.Constant):
                self.freeze(labs, f"combined with unsliceable tensor '{t.name}' at '{node.name}'")
        self.set(out, labs, blk)
        return None

    # layout ops ----------------------------------------------------------------------------
    def op_Flatten(self, node: gs.Node) -> str | None:
        x = node.inputs[0]
        labs = self.lab(x)
        if labs is None:
            return None
        if int(node.attrs.get("axis", 1)) != 1:
            return "flatten axis != 1"
        rest = x.shape[2:] if x.shape else None
        if rest is None or not all(isinstance(d, int) for d in rest):
            return "dynamic spatial shape"
        self.set(node.outputs[0], labs, self.block[x.name] * int(np.prod(rest, dtype=np.int64)))
        return None

    def op_Reshape(self, node: gs.Node) -> str | None:
        x, out = node.inputs[0], node.outputs[0]
        labs = self.lab(x)
        if labs is None:
            return None
        if self._only_first_input_labelled(node) or const_value(node.inputs[1]) is None:
            return "dynamic target shape"
        if x.shape is None or out.shape is None or len(out.shape) < 2:
            return "unknown shapes"
        rest = x.shape[2:]
        blk = self.block[x.name]
        if not all(isinstance(d, int) for d in rest) or not isinstance(out.shape[1], int):
            return "dynamic shapes"
        if out.shape[1] == len(labs) * blk:  # channels stay on axis 1, spatial re-arranged
            self.set(out, labs, blk)
            return None
        flat = len(labs) * blk * int(np.prod(rest, dtype=np.int64))
        if len(out.shape) == 2 and out.shape[1] == flat:
            self.set(out, labs, flat // len(labs))
            return None
        return "reshape mixes channels"

    def _axes_avoid_channel(self, node: gs.Node, r: int | None) -> str | None:
        axes = node_axes(node)
        if axes is None or r is None:
            return "unknown axes"
        axes = [a + r if a < 0 else a for a in axes]
        if not axes or any(a in (0, 1) for a in axes):
            return "acts on the batch or channel axis"
        return None

    def op_Squeeze(self, node: gs.Node) -> str | None:
        labs = self.lab(node.inputs[0])
        if labs is None:
            return None
        refusal = self._axes_avoid_channel(node, rank(node.inputs[0]))
        if refusal is None:
            self.set(node.outputs[0], labs, self.block[node.inputs[0].name])
        return refusal

    def op_Unsqueeze(self, node: gs.Node) -> str | None:
        labs = self.lab(node.inputs[0])
        if labs is None:
            return None
        refusal = self._axes_avoid_channel(node, rank(node.outputs[0]))
        if refusal is None:
            self.set(node.outputs[0], labs, self.block[node.inputs[0].name])
        return refusal

    def op_reduce(self, node: gs.Node) -> str | None:
        labs = self.lab(node.inputs[0])
        if labs is None:
            return None
        if self.block[node.inputs[0].name] != 1:
            return "reduction over a flattened layout"
        refusal = self._axes_avoid_channel(node, rank(node.inputs[0]))
        if refusal is None:
            self.set(node.outputs[0], labs)
        return refusal

    def op_Pad(self, node: gs.Node) -> str | None:
        x = node.inputs[0]
        labs = self.lab(x)
        if labs is None:
            return None
        pads = node.attrs.get("pads")
        if pads is None:
            pv = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
            pads = None if pv is None else pv.ravel().tolist()
        if len(node.inputs) > 3 and node.inputs[3].name:
            return "pad with explicit axes"
        r = rank(x)
        if pads is None or r is None or pads[1] != 0 or pads[1 + r] != 0:
            return "pads the channel axis"
        if len(node.inputs) > 2 and node.inputs[2].name and const_value(node.inputs[2]) is None:
            return "non-constant pad value"
        self.set(node.outputs[0], labs, self.block[x.name])
        return None

    def op_Resize(self, node: gs.Node) -> str | None:
        x = node.inputs[0]
        labs = self.lab(x)
        if labs is None:
            return None
        out = node.outputs[0]
        if self.channels(out) != len(labs) or self.block[x.name] != 1:
            return "resizes the channel axis"
        self.set(out, labs)
        return None

    op_Upsample = op_Resize

    def op_Concat(self, node: gs.Node) -> str | None:
        if all(self.lab(t) is None for t in node.inputs):
            return None
        out = node.outputs[0]
        r = rank(out)
        axis = int(node.attrs.get("axis", 1))
        if r is None or (axis + r if axis < 0 else axis) != 1:
            return "concatenation along a non-channel axis"
        blocks = {self.block[t.name] for t in node.inputs if self.lab(t) is not None}
        if len(blocks) != 1:
            return "concatenation of different layouts"
        blk = blocks.pop()
        parts = []
        for t in node.inputs:
            labs = self.lab(t)
            if labs is None:
                c = self.channels(t)
                if c is None or c % blk:
                    return "input of unknown channel count"
                labs = self.anonymous(t, c // blk, f"concatenated with unlabelled '{t.name}'")
            parts.append(labs)
        self.set(out, np.concatenate(parts), blk)
        return None

    def op_Split(self, node: gs.Node) -> str | None:
        x = node.inputs[0]
        labs = self.lab(x)
        if labs is None:
            return None
        axis = int(node.attrs.get("axis", 0))
        r = rank(x)
        if r is None or (axis + r if axis < 0 else axis) != 1:
            return "split along a non-channel axis"
        blk = self.block[x.name]
        sizes = [self.channels(o) for o in node.outputs]
        if any(s is None or s % blk for s in sizes) or sum(sizes) != len(labs) * blk:
            return "split sizes unknown"
        start = 0
        for o, s in zip(node.outputs, sizes, strict=True):
            self.set(o, labs[start : start + s // blk], blk)
            start += s // blk
        return None

    def op_Slice(self, node: gs.Node) -> str | None:
        x = node.inputs[0]
        labs = self.lab(x)
        if labs is None:
            return None
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
        if axes is None or r is None or any((a + r if a < 0 else a) in (0, 1) for a in axes):
            return "slices the channel axis"
        self.set(node.outputs[0], labs, self.block[x.name])
        return None


def analyze(model: onnx.ModelProto, canonical: bool = False) -> UnitGraph:
    """Finds the units, cuts and groups of `model` (canonicalised first unless told it is)."""
    model = model if canonical else canonicalize(model)
    graph = gs.import_onnx(copy.deepcopy(model))
    an = _Analysis(graph)
    an.run()
    return _collect(model, an)


def _collect(model: onnx.ModelProto, an: _Analysis) -> UnitGraph:
    uf = an.uf
    n = len(uf.parent)
    roots = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    frozen: dict[int, str] = {}
    for lab, why in an.reason.items():
        frozen.setdefault(int(roots[lab]), why)
    producers: dict[int, list[tuple[str, int]]] = {}
    for lab, org in enumerate(an.origin):
        if org is not None:
            producers.setdefault(int(roots[lab]), []).append(org)

    def uid(root: int) -> str:
        org = an.origin[root]
        return f"{org[0]}:{org[1]}" if org is not None else an.anon[root]

    layouts = {t: [uid(int(roots[lab])) for lab in labs] for t, labs in an.labels.items()}
    # groups: units that share a tensor
    gfind = _UnionFind()
    ids: dict[str, int] = {}
    for lay in layouts.values():
        first = None
        for u in lay:
            if u not in ids:
                ids[u] = gfind.add()
            if first is None:
                first = ids[u]
            gfind.union(first, ids[u])
    units: dict[str, Unit] = {}
    group_of: dict[int, str] = {}
    # A unit is a channel of a cut (DESIGN §2): labels that never reach a linear consumer, such
    # as the logits, are outcome variables, not mechanisms, and are not counted.
    in_cuts = {int(r) for t in an.cuts for r in roots[an.labels[t]]}
    for root in sorted(in_cuts):
        u = uid(root)
        g = gfind.find(ids[u])
        gname = group_of.setdefault(g, f"G{len(group_of)}")
        units[u] = Unit(u, gname, producers.get(root, []), [], frozen.get(root))
    cuts: dict[str, Cut] = {}
    shapes = {vi.name: vi for vi in model.graph.value_info}
    for t, consumers in an.cuts.items():
        for u in set(layouts[t]):
            units[u].cuts.append(t)
        cuts[t] = Cut(t, layouts[t], an.block[t], _spatial(shapes.get(t)), consumers)
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
    return UnitGraph(model, units, cuts, groups, layouts, dict(an.block))


def _spatial(vi: onnx.ValueInfoProto | None) -> tuple[int, ...] | None:
    if vi is None:
        return None
    dims = vi.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims[2:]):
        return None
    return tuple(d.dim_value for d in dims[2:])
