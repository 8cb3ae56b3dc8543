"""Random abstraction plans for property tests of the compiler."""

from __future__ import annotations

import numpy as np

from scmopt.plan import Plan
from scmopt.units.analysis import UnitGraph


def random_plan(
    ug: UnitGraph,
    fraction: float = 0.5,
    seed: int = 0,
    fold_prob: float = 0.5,
    per_position_prob: float = 0.5,
) -> Plan:
    """Removes `fraction` of the prunable units; each becomes a constant (scalar or
    per-position) or a fold onto up to three kept units of each of its cuts."""
    rng = np.random.default_rng(seed)
    prunable = sorted(ug.prunable)
    n = int(round(fraction * len(prunable)))
    removed = set(rng.choice(prunable, size=n, replace=False).tolist()) if n else set()
    for cut in ug.cuts.values():  # a plan must keep at least one unit of every cut
        if all(u in removed for u in cut.units):
            removed.discard(sorted(set(cut.units))[0])
    plan = Plan()
    for uid in sorted(removed):
        unit = ug.units[uid]
        fold = rng.random() < fold_prob
        at = {}
        for t in unit.cuts:
            cut = ug.cuts[t]
            pos = cut.positions
            per_pos = pos is not None and pos > 1 and rng.random() < per_position_prob
            offset = rng.normal(size=pos) if per_pos else np.array(rng.normal())
            coef = {}
            if fold:
                kept = [k for k in dict.fromkeys(cut.units) if k not in removed]
                for k in rng.permutation(kept)[: min(3, len(kept))]:
                    coef[str(k)] = float(rng.normal(scale=0.5))
            at[t] = (coef, offset)
        if fold:
            plan.set_folded(uid, at)
        else:
            plan.set_constant(uid, {t: off for t, (_, off) in at.items()})
    return plan
