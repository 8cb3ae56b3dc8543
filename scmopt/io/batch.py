"""A symbolic batch axis for models exported with a fixed batch size.

Exporters that trace with batch 1 bake the batch into shape tensors: a Reshape to the constant
`[1, -1]` (torch's constant folding of `x.view(x.size(0), -1)`; scmopt's canonical form does
the same to the `Shape -> Gather -> Unsqueeze -> Concat` chain, since graphsurgeon folds shapes
it knows statically), Expand / Tile / ConstantOfShape shapes that start with the batch, and
batch-1 constants concatenated with activations. Marking axis 0 of the inputs symbolic is then
not enough: at batch B the Reshape silently makes `[1, B*F]` and a later op fails (or
computes the wrong thing). A -1 for the baked batch would not do either: `[1, -1]` would become
`[-1, -1]`, which onnxruntime refuses ("At most one dimension can be -1").

`symbolic_batch` rewrites those shape tensors so the batch flows from the input: a Reshape
target's leading batch becomes 0 (copy the input's dim 0), a leading batch of a constant shape
that must follow the batch becomes `Shape(input)[0]`, a batch-1 operand of a Concat along
another axis is expanded to the batch. At the original batch size the rewritten model computes
exactly what the original computes. `batching` then checks with onnxruntime that a batch of two
gives the two single-sample runs; when it does not, the model must run sample by sample.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["Batching", "batching", "fixed_batch", "symbolic_batch"]

BATCH = "N"
_MAX_FOLD = 64  # elements: only shape-sized constants are folded
_MAX_PASSES = 64  # one per chain of baked shapes behind each other


@dataclass(frozen=True)
class Batching:
    """`model` with a symbolic batch axis; `batched`: it runs at batch 2 and gives the two
    single-sample runs (else `reason` says why it must run sample by sample); `rewrites`: one
    line per rewritten node."""

    model: onnx.ModelProto
    batched: bool
    reason: str | None = None
    rewrites: list[str] = field(default_factory=list)


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size every graph input fixes on axis 0, or None (symbolic, unknown, no rank,
    or inputs that disagree)."""
    sizes = set()
    for vi in _inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if not len(dims) or not dims[0].HasField("dim_value") or dims[0].dim_value <= 0:
            return None
        sizes.add(dims[0].dim_value)
    return sizes.pop() if len(sizes) == 1 else None


def _relabel(model: onnx.ModelProto) -> None:
    """Axis 0 of every graph input and output becomes symbolic; recorded shapes are dropped."""
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = BATCH
    del model.graph.value_info[:]


class _Rewriter:
    """One pass over the graph with shapes inferred under a symbolic batch."""

    def __init__(self, model: onnx.ModelProto, batch: int) -> None:
        self.model, self.b = model, batch
        g = model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.taken = {*self.inits, *self.producer, *(vi.name for vi in g.input)}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.memo: dict[str, np.ndarray | None] = {}
        self.rewrites: list[str] = []
        self._batch_dim: str | None = None
        self.new_nodes: list[tuple[onnx.NodeProto, list[onnx.NodeProto]]] = []
        probe = copy.deepcopy(model)
        _relabel(probe)
        for out in probe.graph.output:
            out.type.tensor_type.ClearField("shape")
        inferred = onnx.shape_inference.infer_shapes(probe, check_type=False, data_prop=True)
        self.shape: dict[str, list[int | str | None]] = {}
        for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            tt = vi.type.tensor_type
            if tt.HasField("shape"):
                self.shape[vi.name] = [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in tt.shape.dim
                ]
        for t in g.initializer:
            self.shape[t.name] = list(t.dims)

    # helpers -----------------------------------------------------------------------------
    def batchy(self, name: str) -> bool:
        """The tensor carries the (symbolic) batch on axis 0."""
        s = self.shape.get(name)
        return bool(s) and s[0] == BATCH

    def value(self, name: str) -> np.ndarray | None:
        """The value of a small tensor computed from constants only (folded with onnx's
        reference evaluator), else None."""
        if name in self.memo:
            return self.memo[name]
        self.memo[name] = None  # cycles and failures
        if name in self.inits:
            t = self.inits[name]
            v = numpy_helper.to_array(t) if np.prod(t.dims) <= _MAX_FOLD else None
        else:
            v = self._fold(self.producer.get(name), name)
        self.memo[name] = v
        return v

    def _fold(self, node: onnx.NodeProto | None, name: str) -> np.ndarray | None:
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type.startswith("Random"):
            return None
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):  # fmt: skip
            return None
        args = {i: self.value(i) for i in node.input if i}
        if any(v is None for v in args.values()):
            return None
        from onnx.reference import ReferenceEvaluator

        try:
            outs = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, args)
        except Exception:  # an op the reference evaluator does not know, or bad inputs
            return None
        v = np.asarray(outs[list(node.output).index(name)])
        return v if v.size <= _MAX_FOLD else None

    def fresh(self, hint: str) -> str:
        """A tensor name not used in the graph yet (and reserved)."""
        name, k = f"{hint}::symbolic_batch", 0
        while name in self.taken:
            k += 1
            name = f"{hint}::symbolic_batch{k}"
        self.taken.add(name)
        return name

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        t = numpy_helper.from_array(np.asarray(value), name)
        self.model.graph.initializer.append(t)
        self.inits[name] = t
        return name

    def batch_dim(self, before: onnx.NodeProto) -> str:
        """A 1-D int64 tensor [B]: the batch of the first graph input (made once)."""
        src = _inputs(self.model)[0].name
        dim = f"{src}::batch::symbolic_batch"
        if self._batch_dim is None and dim in self.producer:  # made by an earlier pass
            self._batch_dim = dim
        if self._batch_dim is None:
            idx = self.const(np.array([0], np.int64), "batch_index")
            shp = f"{src}::shape::symbolic_batch"
            self.taken.update((shp, dim))
            nodes = [
                helper.make_node("Shape", [src], [shp], name=shp),
                helper.make_node("Gather", [shp, idx], [dim], name=dim, axis=0),
            ]
            self.new_nodes.append((before, nodes))
            self._batch_dim = dim
        return self._batch_dim

    def batch_shape(self, node: onnx.NodeProto, rest: np.ndarray) -> str:
        """Concat([B], rest): a shape whose leading batch follows the input."""
        dim = self.batch_dim(node)
        rest_name = self.const(rest.astype(np.int64), f"{node.name or node.output[0]}::rest")
        out = self.fresh(f"{node.name or node.output[0]}::batch_shape")
        concat = helper.make_node("Concat", [dim, rest_name], [out], name=out, axis=0)
        self.new_nodes.append((node, [concat]))
        return out

    def note(self, node: onnx.NodeProto, what: str) -> None:
        self.rewrites.append(f"{node.op_type} {node.name or node.output[0]!r}: {what}")

    # rules -------------------------------------------------------------------------------
    def run(self) -> bool:
        """Rewrites the nodes whose inputs no rewrite of this pass reaches (their inferred
        shapes are still true); the others wait for the next pass's inference."""
        changed = False
        stale: set[str] = set()
        for node in list(self.model.graph.node):
            if any(i in stale for i in node.input):
                stale.update(node.output)
                continue
            rule = getattr(self, f"op_{node.op_type}", None)
            if node.domain in ("", "ai.onnx") and rule is not None and rule(node):
                changed = True
                stale.update(node.output)
        for anchor, nodes in self.new_nodes:
            g = self.model.graph.node
            pos = list(g).index(anchor)
            for k, n in enumerate(nodes):
                g.insert(pos + k, n)
        return changed

    def op_Reshape(self, node: onnx.NodeProto) -> bool:
        v = self.value(node.input[1]) if len(node.input) > 1 else None
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        if v is None or v.ndim != 1 or not len(v) or allowzero or not self.batchy(node.input[0]):
            return False
        if int(v[0]) != self.b:
            return False
        target = v.astype(np.int64).copy()
        target[0] = 0
        node.input[1] = self.const(target, node.name or node.output[0])
        self.note(node, f"target {v.tolist()} -> {target.tolist()}")
        return True

    def _leading(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The constant 1-D shape input `index` when it starts with the fixed batch."""
        if len(node.input) <= index:
            return None
        v = self.value(node.input[index])
        if v is None or v.ndim != 1 or not len(v) or int(v[0]) != self.b:
            return None
        return v.astype(np.int64)

    def op_Expand(self, node: onnx.NodeProto) -> bool:
        v = self._leading(node, 1)
        data = self.shape.get(node.input[0])
        if v is None or data is None:
            return False
        if self.batchy(node.input[0]) and len(data) == len(v) and self.b != 1:
            new = v.copy()
            new[0] = 1  # broadcast keeps the input's batch
            node.input[1] = self.const(new, node.name or node.output[0])
            self.note(node, f"shape {v.tolist()} -> {new.tolist()}")
            return True
        if not self.batchy(node.input[0]) and self.b != 1 and len(v) >= len(data):
            node.input[1] = self.batch_shape(node, v[1:])
            self.note(node, f"shape {v.tolist()} -> [batch, *{v[1:].tolist()}]")
            return True
        return False

    def op_Tile(self, node: onnx.NodeProto) -> bool:
        v = self._leading(node, 1)
        data = self.shape.get(node.input[0])
        if v is None or self.b == 1 or not data or data[0] != 1 or self.batchy(node.input[0]):
            return False
        node.input[1] = self.batch_shape(node, v[1:])
        self.note(node, f"repeats {v.tolist()} -> [batch, *{v[1:].tolist()}]")
        return True

    def op_ConstantOfShape(self, node: onnx.NodeProto) -> bool:
        v = self._leading(node, 0)
        if v is None or self.b == 1:
            return False
        node.input[0] = self.batch_shape(node, v[1:])
        self.note(node, f"shape {v.tolist()} -> [batch, *{v[1:].tolist()}]")
        return True

    def _row(self, name: str, rank: int) -> np.ndarray | None:
        """For b > 1: the first row of initializer `name` when it has the fixed batch on axis 0,
        the given rank and identical rows (a constant that only repeats across the batch)."""
        t = self.inits.get(name)
        if t is None or self.b == 1 or len(t.dims) != rank or t.dims[0] != self.b:
            return None
        v = numpy_helper.to_array(t)
        return v[:1] if (v == v[:1]).all() else None

    def op_Concat(self, node: onnx.NodeProto) -> bool:
        """An operand without the batch concatenated with batch-carrying ones along another
        axis (a class token; torch.zeros(x.size(0), k) folded to a constant) is expanded to the
        batch: a batch-1 operand as it is, a fixed-batch constant when its rows are equal."""
        if self.opset < 8:
            return False
        shapes = [self.shape.get(i) for i in node.input]
        if any(s is None or not s for s in shapes) or not any(self.batchy(i) for i in node.input):
            return False
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis % len(shapes[0]) == 0:
            return False
        changed = False
        for k, (name, s) in enumerate(zip(list(node.input), shapes, strict=True)):
            if self.batchy(name):
                continue
            row = self._row(name, len(s))
            if row is not None:
                src = self.const(row, name)
            elif s[0] == 1 and self.b == 1:
                src = name
            else:
                continue
            shape = self.batch_shape(node, np.ones(len(s) - 1, np.int64))
            out = self.fresh(f"{name}::batch_expand")
            expand = helper.make_node("Expand", [src, shape], [out], name=out)
            self.new_nodes.append((node, [expand]))
            node.input[k] = out
            self.note(node, f"operand {name!r} (batch {s[0]}) expanded to the batch")
            changed = True
        return changed

    def op_elementwise(self, node: onnx.NodeProto) -> bool:
        """A fixed-batch constant operand whose rows are equal becomes one row (broadcast)."""
        if not any(self.batchy(i) for i in node.input):
            return False
        out = self.shape.get(node.output[0])
        changed = False
        for k, name in enumerate(list(node.input)):
            row = self._row(name, len(out)) if out else None
            if row is None:
                continue
            node.input[k] = self.const(row, name)
            self.note(node, f"constant {name!r} of batch {self.b} with equal rows -> one row")
            changed = True
        return changed


for _op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal",
            "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor"):  # fmt: skip
    setattr(_Rewriter, f"op_{_op}", _Rewriter.op_elementwise)


def _symbolic(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    m = copy.deepcopy(model)
    b = fixed_batch(m)
    rewrites: list[str] = []
    if b is not None:
        for _ in range(_MAX_PASSES):
            try:
                rw = _Rewriter(m, b)
                changed = rw.run()
            except Exception:  # shape inference refused the model: keep what was rewritten
                break
            rewrites += rw.rewrites
            if not changed:
                break
    _relabel(m)
    return m, rewrites


def symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with axis 0 of every input and output symbolic ("N") and, when the inputs fix
    the batch, the shape tensors that bake it rewritten to follow the input's batch.

    Preserves: at the original batch size the result computes exactly what `model` computes
    (a 0 in a Reshape target copies a dim that equals the baked value there; an Expand to the
    batch of a batch-1 operand copies it once). A model whose inputs already have a symbolic
    batch is only relabelled. Stale value_info is dropped. `model` is not modified. Whether the
    result runs at other batch sizes is checked by `batching` / runtime.accepts_batch.
    """
    return _symbolic(model)[0]


def _probe_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray] | None:
    """Two different samples per input: seeded normal floats, zeros for other types."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in _inputs(model):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in tt.shape.dim]  # fmt: skip
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        shape = [2, *dims[1:]] if dims else []
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype)
    return feeds


def batching(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray] | None = None,
    device: str = "cpu",
) -> Batching:
    """The symbolic-batch form of `model` and whether onnxruntime runs it on batches.

    `feeds` (at least two samples for a meaningful check; default: two synthesized ones) are
    run as one batch of two and as two single samples; the outputs must agree. Never raises:
    a model onnxruntime cannot run at batch 2 gets `batched=False` and the reason.
    """
    from scmopt.runtime.sessions import batch_probe

    m, rewrites = _symbolic(model)
    feeds = dict(feeds) if feeds is not None else _probe_feeds(m)
    if feeds is None:
        return Batching(m, False, "an input has no shape: no probe batch", rewrites)
    _, reason = batch_probe(m, feeds, device)
    return Batching(m, reason is None, reason, rewrites)
