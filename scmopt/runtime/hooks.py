"""The intervenable model: one ONNX rewrite that puts hooks on cut tensors.

A hook on cut T (channels C, P values per channel) computes, in order,

    X  = T as [N, C, P]                 (units.layout: channel axis to 1, features channel-major)
    X  = X + mask * (X[src] - X)         interchange: take units from sample src of the batch
    X[R] = M[R] @ X + B[R]               plan: replace removed units (const or input-driven)
    X  = X + delta                       finite-difference perturbation
    capture X                            as output "T::value"
    T' = X back in T's layout           every reader of T (incl. graph outputs) reads T'

so a single onnxruntime session captures activations, applies a plan, patches units between
samples and perturbs them. Patching comes before the plan because in the abstraction a folded
unit is a function of its kept neighbours: when they are swapped it follows them, exactly as
the compiled model (whose consumers read the patched neighbours) does. `simulate` (plan as
constants, nothing else) is the reference semantics of a plan: the compiler must reproduce it.

At cuts of >= SPARSE_CHANNELS channels (opset >= 13) the plan hook computes only the replaced
rows R: each is a gather of its fold parents (at most a few) times their coefficients plus its
offset, scattered back into X. The dense form M @ X + B costs C^2 P per sample, more than the
network itself at wide cuts (EfficientNet-Lite1: 1.35 G multiply-adds per sample for the 44
hooks against the network's 0.6 G), and every analysis pass paid it even where nothing was
removed; at narrow cuts with many positions it is the faster of the two. Runs feed the rows as
inputs (plan_inputs) or carry them as constants ("const").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from scmopt.errors import ScmoptError
from scmopt.io.graph import infer_shapes, opset
from scmopt.plan import Plan
from scmopt.units.analysis import Cut, UnitGraph
from scmopt.units.layout import Layout


@dataclass
class HookSpec:
    """Which operations the hook on one cut performs."""

    plan: str = "none"  # "none" | "const" | "input"
    patch: bool = False
    perturb: bool = False
    capture: bool = False


@dataclass
class Hooked:
    """A hooked model and the names of its extra inputs and outputs, per cut."""

    model: onnx.ModelProto
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # cut -> role -> input
    outputs: dict[str, str] = field(default_factory=dict)  # cut -> captured value output


def hook(
    ug: UnitGraph,
    specs: dict[str, HookSpec],
    plan: Plan | None = None,
    model: onnx.ModelProto | None = None,
    channels: dict[str, int] | None = None,
    kept: dict[str, np.ndarray] | None = None,
    sparse: bool = True,
) -> Hooked:
    """Returns `model` (default: the unit graph's canonical model) with hooks on `specs`' cuts.

    For hooking a compiled model whose cuts lost their removed units (its cut tensors keep
    their names): `kept` gives each cut's kept channel indices; `channels` only a count, which
    is enough for channel-major layouts. sparse=False: dense plan hooks at every cut.
    """
    model = copy.deepcopy(ug.model if model is None else model)
    g = model.graph
    producer = {out: i for i, n in enumerate(g.node) for out in n.output}
    result = Hooked(model)
    sparse = sparse and opset(model) >= SPARSE_OPSET
    inserts: dict[int, list[onnx.NodeProto]] = {}
    for t, spec in specs.items():
        cut = ug.cuts[t]
        if t not in producer:
            raise ScmoptError(f"cut {t!r} has no producer node")
        pos = producer[t]
        node = g.node[pos]
        orig = f"{t}::orig"
        node.output[list(node.output).index(t)] = orig
        lay = _compiled_layout(cut, channels, kept)
        c = lay.channels
        p_dim = f"P_{len(result.inputs)}"
        names = result.inputs.setdefault(t, {})
        nodes: list[onnx.NodeProto] = []

        def step(op: str, ins: list[str], out: str, **attrs) -> str:
            nodes.append(helper.make_node(op, ins, [out], name=f"{t}::{out}", **attrs))  # noqa: B023
            return out

        rank = cut.rank or lay.axis + 1
        x = lay.onnx_to_ncp(orig, rank, t, step, g.initializer)
        if spec.patch:
            mask, src = f"{t}::mask", f"{t}::src"
            g.input.append(helper.make_tensor_value_info(mask, TensorProto.FLOAT, ["N", c, 1]))
            g.input.append(helper.make_tensor_value_info(src, TensorProto.INT64, ["N"]))
            names["mask"], names["src"] = mask, src
            s = step("Gather", [x, src], f"{t}::source", axis=0)
            d = step("Sub", [s, x], f"{t}::swap")
            d = step("Mul", [d, mask], f"{t}::swap_masked")
            x = step("Add", [x, d], f"{t}::patched")
        if spec.plan != "none":
            if spec.plan == "const" and plan is None:
                raise ScmoptError("plan hooks need a plan")
            wide = sparse and c >= SPARSE_CHANNELS
            x = _plan_hook(t, cut, spec, plan, x, c, p_dim, wide, names, g, step)
        if spec.perturb:
            delta = f"{t}::delta"
            g.input.append(helper.make_tensor_value_info(delta, TensorProto.FLOAT, ["N", c, p_dim]))
            names["delta"] = delta
            x = step("Add", [x, delta], f"{t}::perturbed")
        if spec.capture:
            out = step("Identity", [x], f"{t}::value")
            g.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
            result.outputs[t] = out
        lay.onnx_from_ncp(x, orig, rank, t, t, step, g.initializer)
        inserts[pos] = inserts.get(pos, []) + nodes
    ordered = []
    for i, n in enumerate(list(g.node)):
        ordered.append(n)
        ordered.extend(inserts.get(i, []))
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]
    return result


PLAN_ROLES = ("M", "B", "rows", "idx", "coef")  # the plan hook's inputs, dense or sparse
SPARSE_OPSET = 13  # ReduceSum with axes as an input
# channels from which a cut's plan hook is sparse: below, the dense product (multi-threaded
# BLAS, c^2 per position) is cheaper than the gather/scatter (memory-bound, one thread)
SPARSE_CHANNELS = 256


def is_plan_input(name: str) -> bool:
    """Whether a hooked model's input name is one of a plan hook's (t::M, t::rows, ...)."""
    return "::" in name and name.rpartition("::")[2] in PLAN_ROLES


def plan_inputs(roles: dict[str, str], cut: Cut, plan: Plan | None) -> dict[str, np.ndarray]:
    """Feeds of one cut's plan hook (`roles`: role -> input name, Hooked.inputs[t]) for `plan`
    (None or not touching the cut: the identity). Sparse hooks take the replaced rows: rows
    [R], parents idx [R, W] (padded with the row itself at coefficient 0), coef [R, W, 1],
    offsets B [R, P]; the identity is one row that copies channel 0 onto itself (exact)."""
    touched = plan is not None and plan.touches(cut)
    if "M" in roles:
        if touched:
            m, b = plan.cut_affine(cut)
        else:
            m, b = np.eye(cut.channels), np.zeros((cut.channels, 1))
        return {roles["M"]: m.astype(np.float32), roles["B"]: b.astype(np.float32)}
    rows, b = plan.cut_rows(cut) if touched else ({}, np.zeros((1, 1)))
    order = sorted(rows)
    if not order:
        vals = (np.zeros(1, np.int64), np.zeros((1, 1), np.int64), np.ones((1, 1, 1)),
                np.zeros((1, 1)))  # fmt: skip
    else:
        w = max(1, max(len(rows[i]) for i in order))
        idx = np.repeat(np.array(order, np.int64)[:, None], w, axis=1)
        coef = np.zeros((len(order), w, 1))
        for j, i in enumerate(order):
            parents = sorted(rows[i])
            idx[j, : len(parents)] = parents
            coef[j, : len(parents), 0] = [rows[i][k] for k in parents]
        vals = (np.array(order, np.int64), idx, coef, b[order])
    names = ("rows", "idx", "coef", "B")
    return {roles[r]: v if v.dtype == np.int64 else v.astype(np.float32)
            for r, v in zip(names, vals, strict=True)}  # fmt: skip


def plan_feeds(inputs: dict[str, dict[str, str]], ug: UnitGraph, sites: list[str],
               plan: Plan | None) -> dict[str, np.ndarray]:  # fmt: skip
    """plan_inputs of every site of a hooked model (`inputs`: Hooked.inputs)."""
    feeds: dict[str, np.ndarray] = {}
    for t in sites:
        feeds.update(plan_inputs(inputs[t], ug.cuts[t], plan))
    return feeds


def _compiled_layout(cut: Cut, channels: dict[str, int] | None,
                     kept: dict[str, np.ndarray] | None) -> Layout:  # fmt: skip
    """The cut's layout in the model being hooked (the original, or a compiled one)."""
    lay = cut.layout
    if kept is not None and cut.tensor in kept:
        mask = np.zeros(lay.channels, dtype=bool)
        mask[np.asarray(kept[cut.tensor], dtype=np.int64)] = True
        return lay.kept(mask)
    if channels is not None and channels.get(cut.tensor, lay.channels) != lay.channels:
        if not lay.major:
            raise ScmoptError(f"cut {cut.tensor!r}: a re-ordered layout needs its kept channels")
        return Layout.simple(list(lay.labels)[: channels[cut.tensor]], lay.axis, lay.block)
    return lay


def _plan_hook(t: str, cut: Cut, spec: HookSpec, plan: Plan | None, x: str, c: int,
               p_dim: str, sparse: bool, names: dict[str, str], g: onnx.GraphProto,
               step) -> str:  # fmt: skip
    """The plan's replacement of cut t's rows (module docstring); returns the replaced X."""
    roles = ("rows", "idx", "coef", "B") if sparse else ("M", "B")
    own = {r: f"{t}::{r}" for r in roles}
    if spec.plan == "const":
        for name, v in plan_inputs(own, cut, plan).items():
            g.initializer.append(numpy_helper.from_array(v, name))
    else:
        r, w = f"R_{t}", f"W_{t}"
        shapes = {"M": (TensorProto.FLOAT, [c, c]), "rows": (TensorProto.INT64, [r]),
                  "idx": (TensorProto.INT64, [r, w]), "coef": (TensorProto.FLOAT, [r, w, 1]),
                  "B": (TensorProto.FLOAT, [r if sparse else c, p_dim])}  # fmt: skip
        for role, name in own.items():
            g.input.append(helper.make_tensor_value_info(name, *shapes[role]))
        names.update(own)
    if not sparse:
        x = step("MatMul", [own["M"], x], f"{t}::mx")
        return step("Add", [x, own["B"]], f"{t}::planned")
    g.initializer.append(numpy_helper.from_array(np.array([2], np.int64), f"{t}::axis2"))
    g.initializer.append(numpy_helper.from_array(np.array([1, -1, 1], np.int64), f"{t}::r3"))
    parents = step("Gather", [x, own["idx"]], f"{t}::parents", axis=1)  # [N, R, W, P]
    terms = step("Mul", [parents, own["coef"]], f"{t}::terms")
    y = step("ReduceSum", [terms, f"{t}::axis2"], f"{t}::folded", keepdims=0)  # [N, R, P]
    y = step("Add", [y, own["B"]], f"{t}::replaced")
    where = step("Reshape", [own["rows"], f"{t}::r3"], f"{t}::rows3")
    where = step("Expand", [where, step("Shape", [y], f"{t}::rshape")], f"{t}::where")
    return step("ScatterElements", [x, where, y], f"{t}::planned", axis=1)


def simulate(ug: UnitGraph, plan: Plan) -> onnx.ModelProto:
    """The reference semantics of `plan`: the canonical model with every touched cut replaced."""
    plan.validate(ug)
    specs = {t: HookSpec(plan="const") for t, cut in ug.cuts.items() if plan.touches(cut)}
    model = hook(ug, specs, plan).model
    return infer_shapes(model)


def dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Marks axis 0 of every graph input and output symbolic ("N"), for batched analysis runs;
    shape tensors of a fixed-batch export that bake the batch are rewritten to follow it
    (scmopt.io.batch.symbolic_batch: same function at the original batch size).

    Callers still check with a batch of two (runtime.accepts_batch: it must run and give the
    single-sample results) and fall back to one sample per run.
    """
    from scmopt.io.batch import symbolic_batch

    return symbolic_batch(model)
