"""Shared tools of the op-family tests (tests/ops/test_*.py): tiny seeded models built with
onnx.helper, unit look-ups, and the exactness check of a compiled plan against its simulation
on onnxruntime."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from scmopt import units
from scmopt.compiler.compile import compile_plan
from scmopt.ops import cost
from scmopt.plan import Plan
from scmopt.runtime.hooks import simulate
from scmopt.runtime.sessions import session

F = TensorProto.FLOAT
OPSET = 17
TOL = 1e-5


class Net:
    """Accumulates nodes and seeded random initializers; `model()` wraps them up."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def tensor(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def w(self, name: str, *shape: int, fan_in: int | None = None) -> str:
        """N(0, 1 / fan_in) float32 weights (fan_in defaults to the product of shape[1:])."""
        fan = fan_in or int(np.prod(shape[1:], dtype=np.int64)) or 1
        return self.tensor(name, (self.rng.standard_normal(shape) / np.sqrt(fan)).astype("f4"))

    def b(self, name: str, *shape: int) -> str:
        return self.tensor(name, self.rng.uniform(-0.5, 0.5, shape).astype(np.float32))

    def ints(self, name: str, values) -> str:
        return self.tensor(name, np.asarray(values, np.int64))

    def op(
        self,
        op: str,
        inputs: list[str],
        name: str,
        out: str | None = None,
        n_out: int = 1,
        domain: str | None = None,
        **attrs,
    ):
        """Adds node `name`; returns its output (`out`, default the node name) or, with
        n_out > 1, the list of its outputs `name:0`, `name:1`, ..."""
        outs = [out or name] if n_out == 1 else [f"{name}:{i}" for i in range(n_out)]
        extra = {"domain": domain} if domain else {}
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **extra, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(
        self, inputs: dict, outputs: dict, domains: dict | None = None, opset: int = OPSET
    ) -> onnx.ModelProto:
        """`inputs` / `outputs`: name -> shape (None: unknown shape)."""
        graph = helper.make_graph(
            self.nodes,
            "net",
            [helper.make_tensor_value_info(k, F, s) for k, s in inputs.items()],
            [helper.make_tensor_value_info(k, F, s) for k, s in outputs.items()],
            self.inits,
        )
        opsets = [helper.make_opsetid("", opset)]
        opsets += [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
        return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def feeds_for(model: onnx.ModelProto, batch: int = 3, seed: int = 1, **dims: int) -> dict:
    """N(0, 1) inputs: axis 0 is `batch`, other symbolic dims come from `dims` (name -> size)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = []
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            else:
                shape.append(batch if i == 0 else dims[d.dim_param])
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return session(model, device="cpu").run(None, feeds)


def relative_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Max abs difference over all outputs, relative to the scale of the reference `b`."""
    return max(
        float(np.abs(x - y).max() / (np.abs(y).max() + 1e-12)) for x, y in zip(a, b, strict=True)
    )


def units_of(ug: units.UnitGraph, node: str) -> list[units.Unit]:
    """The units `node` produces (one per output channel), in channel order."""
    us = [u for u in ug.units.values() if any(p == node for p, _ in u.producers)]
    return sorted(us, key=lambda u: next(c for p, c in u.producers if p == node))


def reasons(us) -> Counter:
    """How many of `us` are frozen for each reason (None: prunable)."""
    return Counter(u.frozen for u in us)


def frozen_with(us, *words: str) -> bool:
    """True when every unit of `us` (at least one) is frozen for a reason containing `words`."""
    us = list(us)
    return bool(us) and all(u.frozen and all(w in u.frozen for w in words) for u in us)


def cut_read_by(ug: units.UnitGraph, node: str) -> units.Cut:
    cuts = [c for c in ug.cuts.values() if node in c.consumers]
    assert len(cuts) == 1, f"{node} reads {len(cuts)} cuts: {sorted(ug.cuts)}"
    return cuts[0]


def random_plan(
    ug: units.UnitGraph,
    seed: int = 0,
    fraction: float = 0.5,
    fold: float = 0.5,
    per_position: float = 0.5,
) -> Plan:
    """Removes `fraction` of every cut's prunable units (at least one, keeping at least one):
    each a constant (scalar, or one value per position) or a fold onto up to three kept units
    of each of its cuts, with seeded random numbers."""
    rng = np.random.default_rng(seed)
    removed: set[str] = set()
    for cut in ug.cuts.values():
        prunable = [u for u in dict.fromkeys(cut.units) if ug.units[u].prunable]
        n = min(max(1, int(round(fraction * len(prunable)))), len(set(cut.units)) - 1)
        if n > 0 and prunable:
            removed.update(rng.permutation(prunable)[:n].tolist())
    for cut in ug.cuts.values():  # keep at least one unit of every cut
        if all(u in removed for u in cut.units):
            removed.discard(sorted(set(cut.units))[0])
    plan = Plan()
    for uid in sorted(removed):
        unit = ug.units[uid]
        is_fold = rng.random() < fold
        at = {}
        for t in unit.cuts:
            cut = ug.cuts[t]
            pos = cut.positions
            per_pos = pos is not None and pos > 1 and rng.random() < per_position
            offset = rng.normal(size=pos) if per_pos else np.array(rng.normal())
            coef = {}
            if is_fold:
                kept = [k for k in dict.fromkeys(cut.units) if k not in removed]
                for k in rng.permutation(kept)[:3]:
                    coef[str(k)] = float(rng.normal(scale=0.5))
            at[t] = (coef, offset)
        if is_fold:
            plan.set_folded(uid, at)
        else:
            plan.set_constant(uid, {t: off for t, (_, off) in at.items()})
    return plan


def check_plan(ug: units.UnitGraph, plan: Plan, feeds: dict) -> onnx.ModelProto:
    """The compiled plan computes its simulation (max relative error <= 1e-5 on onnxruntime),
    changes what the model computes, and is smaller: fewer FLOPs, and fewer parameters unless a
    per-position constant on a cut with spatial or token positions costs an exact bias map."""
    assert plan.actions, "empty plan"
    sim = simulate(ug, plan)
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    want = run(sim, feeds)
    err = relative_error(run(compiled, feeds), want)
    assert err <= TOL, f"compiled vs simulation: relative error {err:.3g}"
    assert relative_error(want, run(ug.model, feeds)) > 1e-4, "the plan changes nothing"
    assert cost.count_flops(compiled) < cost.count_flops(ug.model)
    maps = any(
        rep.offset.size > 1 and ug.cuts[t].spatial
        for act in plan.actions.values()
        for t, rep in act.at.items()
    )
    if not maps:
        assert cost.count_params(compiled) < cost.count_params(ug.model)
    return compiled


def check_random_plans(model: onnx.ModelProto, feeds: dict, seeds=range(3), **kw) -> None:
    """check_plan for seeded random plans: mixed, constants only, folds only."""
    ug = units.analyze(model)
    assert ug.prunable, f"nothing prunable: {dict(reasons(ug.units.values()))}"
    for seed in seeds:
        for fold in (0.5, 0.0, 1.0):
            check_plan(ug, random_plan(ug, seed=seed, fold=fold, **kw), feeds)
