"""A searched plan made into a validated artifact, and the user's rule checked on it.

build: align, the size guard (compiler.cost_guard), compile, compile == the plan's simulation
on every output, and every validation number measured on the compiled model (validation
split). missed: why the artifact misses a fidelity rule or certificate there. walk_back: when
it does, the most compressed of the search's accepted round plans (SearchResult.checkpoints)
whose artifact meets it: the rule holds by re-keeping the units of the rounds after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from scmopt.analysis.align import align_plan
from scmopt.compiler.compile import Compiled
from scmopt.compiler.cost_guard import never_larger
from scmopt.errors import CompileMismatch
from scmopt.evaluation import validate
from scmopt.evaluation.agreements import Metric
from scmopt.evaluation.metrics import Metrics
from scmopt.ops import cost
from scmopt.plan import Plan
from scmopt.runtime import work
from scmopt.runtime.hooks import simulate
from scmopt.units.analysis import UnitGraph

if TYPE_CHECKING:
    from scmopt.analysis.rules import Checkpoint
    from scmopt.analysis.search import SearchResult


@dataclass(frozen=True)
class Validation:
    """What every build of one compress run shares: the original's cost, the validation split
    and how it is judged."""

    cost_before: cost.Cost  # of the original
    feeds: dict[str, np.ndarray]  # the validation split
    labels: np.ndarray | None  # its labels, when the data had them
    batch_size: int | None
    device: str
    tolerance: float  # compile == simulation, relative to the output scale
    swap_p: float
    seed: int
    metric: Metric
    iia_cuts: int | None = None  # sites swept for IIA (validate.evaluate_artifact max_cuts)
    # the original's outputs on the split, run once for every build (walk backs build several)
    _original: list = field(default_factory=list, compare=False, repr=False)

    def original_outputs(self, ug: UnitGraph) -> list[np.ndarray]:
        if not self._original:
            self._original.extend(validate.outputs(ug.model, self.feeds, self.batch_size))
        return self._original


@dataclass
class Built:
    plan: Plan  # after align and the size guard
    compiled: Compiled
    cost: cost.Cost  # of the compiled model
    error: float  # max |compiled - simulation| on the validation split
    metrics: Metrics
    seconds: dict[str, float] = field(default_factory=dict)  # "compile", "validate"
    notes: list[str] = field(default_factory=list)


def build(ug: UnitGraph, plan: Plan, scores: dict[str, float], align: int | None,
          v: Validation) -> Built:  # fmt: skip
    """Aligns, guards the size of, compiles and validates `plan` (see api.compress). Raises
    CompileMismatch when the compiled model differs from the plan's simulation."""
    notes: list[str] = []
    if align is not None:
        aligned = align_plan(ug, plan, scores, align)
        if re_kept := len(plan.actions) - len(aligned.actions):
            notes.append(f"align {align}: {re_kept} removed units re-kept so convolutional cuts "
                         f"keep multiples of {align} channels")  # fmt: skip
        plan = aligned
    t0 = time.perf_counter()
    sample = {k: x[:1] for k, x in v.feeds.items()}
    with work.stage("compile"):
        guarded = never_larger(ug, plan, v.cost_before,
                               lambda c: cost.model_cost(c.model, sample, v.device))  # fmt: skip
    plan, compiled, cost_after = guarded.plan, guarded.compiled, guarded.cost
    notes.extend(guarded.notes)
    for when, c in (("before", v.cost_before), ("after", cost_after)):
        if c.unknown:
            notes.append(f"FLOPs {when} are a lower bound{c.unknown_text()}, counted as 0")
    with work.stage("compile"):  # the compiled model against the plan's simulation
        f_sim = validate.outputs(simulate(ug, plan), v.feeds, v.batch_size)
        f_comp = validate.outputs(compiled.model, v.feeds, v.batch_size)
    # every output of the compiled model equals the plan's simulation
    pairs = list(zip(f_comp, f_sim, strict=True))
    err = max(float(np.abs(c - s).max()) if c.size else 0.0 for c, s in pairs)
    scale = max(float(np.abs(s).max()) if s.size else 0.0 for s in f_sim) or 1.0
    if err > v.tolerance * max(scale, 1.0):
        raise CompileMismatch(
            f"compiled model differs from the plan's simulation by {err:.3g} "
            f"(tolerance {v.tolerance * max(scale, 1.0):.3g}); nothing written"
        )
    t1 = time.perf_counter()
    # every validation number on the compiled artifact, validation split, the search's draws
    with work.stage("validation"):
        m = validate.evaluate_artifact(ug, compiled.model, compiled.kept_positions, v.feeds,
                                       v.labels, p=v.swap_p, seed=v.seed,
                                       batch_size=v.batch_size, metric=v.metric,
                                       plan=plan, max_cuts=v.iia_cuts)  # fmt: skip
        # the outputs the search did not read, judged all the same
        m.other_outputs = validate.other_outputs(
            ug.model, compiled.model, v.feeds, v.batch_size, candidate_outputs=f_comp,
            original_outputs=lambda: v.original_outputs(ug))  # fmt: skip
    seconds = {"compile": t1 - t0, "validate": time.perf_counter() - t1}
    return Built(plan, compiled, cost_after, err, m, seconds, notes)


def missed(m: Metrics, min_fidelity: float | None, certify: float | None, delta: float,
           seed: int) -> str | None:  # fmt: skip
    """Why the validated plan misses the user's rule on the validation split, or None."""
    if certify is not None:
        lower = m.confidence(delta, seed)["fidelity"]["lower"]
        if lower < certify:
            return (f"certified fidelity {lower:.4f} < --certify {certify} on the validation "
                    f"split (n={m.n}, delta {delta})")  # fmt: skip
    elif min_fidelity is not None and m.fidelity < min_fidelity:
        return (f"target missed on the validation split: fidelity ({m.metric}) {m.fidelity:.4f} < "
                f"--min-fidelity {min_fidelity} (n={m.n})")  # fmt: skip
    return None


def walk_back(ug: UnitGraph, found: SearchResult, align: int | None, v: Validation,
              why_not: Callable[[Metrics], str | None]
              ) -> tuple[Checkpoint, Built, int] | None:  # fmt: skip
    """The latest of `found.checkpoints` whose artifact meets the rule (why_not(metrics) is
    None), its build and the number of builds tried; None when none does. The final plan is
    taken to miss it. Checkpoints are nested (each removes what the one before did and more),
    so fidelity falls along them as a rule: bisection, about log2(rounds) builds. The empty
    plan (nothing removed) is not a candidate."""
    chain = found.checkpoints
    lo, hi = -1, len(chain)  # lo: meets (or nothing removed), hi: misses
    best: tuple[Checkpoint, Built] | None = None
    tried = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if not chain[mid].plan.removed:
            lo = mid
            continue
        b = build(ug, chain[mid].plan, found.scores, align, v)
        tried += 1
        if why_not(b.metrics) is None:
            lo, best = mid, (chain[mid], b)
        else:
            hi = mid
    return None if best is None else (best[0], best[1], tried)
