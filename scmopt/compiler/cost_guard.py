"""Never larger than the input: a compiled plan may not have more parameters or FLOPs than the
original model.

Removing a unit saves its producer rows and consumer columns, but an exact encoding of its
replacement can cost more: a per-position constant entering a padded convolution becomes an
[O, H, W] map, a constant channel a Conv(ones, V) branch, a fold a denser consumer. When the
compiled model is larger than the original on either count, the cut whose re-encoding or
re-keeping removes most of the excess is changed first: per-position offsets become the
channel mean (the cheaper Conv(ones, V) encoding), then the cut's removed units are kept. Each
step is compiled and counted again; the result is the first plan that is not larger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scmopt.compiler.compile import Compiled, compile_plan
from scmopt.ops.cost import Cost
from scmopt.plan import Action, Plan, Replacement
from scmopt.units.analysis import UnitGraph

Counter = Callable[[Compiled], Cost]


@dataclass
class Guarded:
    plan: Plan
    compiled: Compiled
    cost: Cost
    notes: list[str] = field(default_factory=list)


def _excess(c: Cost, before: Cost) -> float:
    """How far over the original, in relative terms (0 when not larger on either count)."""
    p = max(0.0, c.params / max(before.params, 1) - 1.0)
    f = max(0.0, c.flops / max(before.flops, 1) - 1.0)
    return p + f


def _flattened(plan: Plan, cut: str) -> Plan | None:
    """`plan` with the per-position offsets at `cut` replaced by their mean (None: it has
    none)."""
    out = Plan(dict(plan.actions))
    changed = False
    for uid, act in plan.actions.items():
        rep = act.at.get(cut)
        if rep is not None and rep.offset.size > 1:
            at = dict(act.at)
            at[cut] = Replacement(np.asarray(rep.offset.mean()), dict(rep.coef))
            out.actions[uid] = Action(act.kind, at)
            changed = True
    return out if changed else None


def _rekept(plan: Plan, ug: UnitGraph, cut: str) -> Plan:
    """`plan` without the removals of the units at `cut` (folds leaning on them are kept:
    they lean on kept units only)."""
    gone = {u for u in ug.cuts[cut].units if u in plan.actions}
    return Plan({u: a for u, a in plan.actions.items() if u not in gone})


def never_larger(ug: UnitGraph, plan: Plan, before: Cost, count: Counter,
                 max_steps: int = 64) -> Guarded:  # fmt: skip
    """Compiles `plan`, changing it as the module docstring says until the compiled model has
    no more parameters and FLOPs than `before` (the original's costs); `count` measures a
    compiled model. Returns the plan used, its compiled model, cost and notes."""
    compiled = compile_plan(ug, plan)
    cost = count(compiled)
    notes: list[str] = []
    for _ in range(max_steps):
        if _excess(cost, before) == 0.0:
            break
        touched = [t for t, c in ug.cuts.items() if plan.touches(c)]
        best = None
        for t in touched:
            flat = _flattened(plan, t)
            tries = [("offsets made per-channel", flat)] if flat is not None else []
            tries.append(("removals re-kept", _rekept(plan, ug, t)))
            for what, cand in tries:
                comp = compile_plan(ug, cand)
                c = count(comp)
                if best is None or _excess(c, before) < best[0]:
                    best = (_excess(c, before), t, what, cand, comp, c)
                if _excess(c, before) == 0.0:
                    break
        if best is None or best[0] >= _excess(cost, before):
            notes.append("the compiled model stays larger than the original: no cut change "
                         "reduces the excess")  # fmt: skip
            break
        _, t, what, plan, compiled, cost = best
        notes.append(f"cut {t!r}: {what} (the exact encoding cost more than it saved)")
    return Guarded(plan, compiled, cost, notes)
