"""The stopping rules' loops over a running search (scmopt.analysis.search._Search): a fixed
keep count reached in halving rounds, budget/fidelity/IIA targets with refit-on-fail and
halving, and the final polish (refits) and fold/constant blends, each kept only when the
held-out risk drops."""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scmopt.analysis.criteria import criterion as get_criterion
from scmopt.analysis.groups import group_of, round_quota
from scmopt.analysis.measure import Metrics
from scmopt.analysis.stats import Values
from scmopt.errors import ScmoptError
from scmopt.plan import Plan

if TYPE_CHECKING:
    from scmopt.analysis.search import _Search


@dataclass
class Checkpoint:
    """A plan the search accepted at the end of a round, with the round's trajectory row
    (its held-out metrics): what a rule missed on the validation split can walk back to."""

    plan: Plan
    row: dict


def probe_band(n_cut: int | dict[str, int], fraction: float, cap: int,
               group: Callable[[str], str] | None = None,
               ) -> Callable[[dict[str, float]], list[str]]:  # fmt: skip
    """Per-unit probes for the units ranked around position n_cut by the screen; with a
    dict (group -> units removed this round) and `group`, around each group's own cut-off
    (heads rank behind neurons: one band would never reach them). The cap is shared."""

    def band(order: list[str], n: int, cap_: int) -> list[str]:
        w = min(max(4, int(math.ceil(fraction * len(order) / 2))), max(2, cap_ // 2))
        return order[max(0, n - w) : n + w]

    def focus(pre: dict[str, float]) -> list[str]:
        order = sorted(pre, key=lambda u: (pre[u], u))
        if not isinstance(n_cut, dict):
            return band(order, n_cut, cap)  # cap >= 4
        members: dict[str, list[str]] = {}
        for u in order:
            members.setdefault(group(u) if group else "", []).append(u)
        share = max(4, cap // max(1, len(members)))
        return [u for g, us in sorted(members.items()) for u in band(us, n_cut.get(g, 0), share)]

    return focus


def record_round(s: _Search, traj: list[dict], r: int, plan: Plan, units: list[str], pred: float,
            m: Metrics, prev: float, accepted: bool,
            target: Values = Values.PLAN) -> None:  # fmt: skip
    """One trajectory row; predicted risk = previous measured risk + the model's increase;
    `target`: the values the round's fits went toward. An accepted round's plan is kept as a
    checkpoint (SearchResult.checkpoints)."""
    traj.append({
        "round": r, "kept": len(s.ug.prunable) - len(plan.removed),
        "removed": len(units), "predicted_risk": prev + pred,
        "risk": m.risk, "fidelity": m.fidelity, "iia": m.iia, "accepted": accepted,
        "target": "original" if target == Values.ORIGINAL else "plan",
    })  # fmt: skip
    keep = s.cfg.checkpoints if s.cfg.checkpoints is not None else s.rule == "min_fidelity"
    if accepted and keep:
        s.checkpoints.append(Checkpoint(copy.deepcopy(plan), dict(traj[-1])))
    emit_row(s, traj)


def emit_row(s: _Search, traj: list[dict]) -> None:
    """Hands the newest trajectory row to `progress.record(row)` when the progress callback
    has that method (optional: a plain progress(stage, done, total) function still works)."""
    record = getattr(s.progress, "record", None)
    if record is not None:
        record(dict(traj[-1]))


def keep_mode(s: _Search, targets: dict[str, int], rounds: int, step: int | None,
              traj: list[dict]) -> None:  # fmt: skip
    """Halving rounds until each group (analysis.groups) keeps its target; with `step`, that
    many units per round."""
    prev = 0.0
    r = 0
    while True:
        left = Counter(group_of(s.ug, u) for u in s.candidates())
        left = {g: left.get(g, 0) - n for g, n in targets.items()}
        total = sum(max(0, n) for n in left.values())
        if total <= 0:
            break
        r += 1
        last = r >= rounds and step is None
        quota = round_quota(left, last=last or step is not None)
        n = min(step, total) if step else sum(quota.values())
        if s.progress:
            s.progress("round", r, rounds if step is None else r + total // max(step, 1))
        focus = probe_band(quota, s.probe_fraction, s.max_probes, lambda u: group_of(s.ug, u))
        sc = s.analyse(r, focus)
        how = {"count": n, "quota": quota}
        units, plan, pred, m, target = _best_target(s, sc, how, step is None)
        if not units:
            raise ScmoptError("no unit can be removed without emptying a cut")
        s.plan = plan
        if step is None or len(s.candidates()) == sum(targets.values()):
            m = m or s.measure(s.plan)
            record_round(s, traj, r, s.plan, units, pred, m, prev, True, target)
            prev = m.risk
    if s.progress:
        s.progress("round", r, r)


def _best_target(s: _Search, sc, how: dict, try_both: bool):
    """(units, plan, predicted risk, held-out metrics or None, fit target) of this round's
    choice: fits toward the original's values, and (when the search tries both) toward the
    plan's, the one with the lower held-out risk."""
    units, plan, pred = s.choose(sc, **how)
    target = Values.ORIGINAL
    if not units:
        return units, plan, pred, None, target
    m = None
    if try_both and s.targets():
        m = s.measure(plan)
        s.stats.forget(Values.ORIGINAL)  # memory: the plan target's blocks come next
        alt_units, alt, alt_pred = s.choose(s.retarget(sc, Values.PLAN), target=Values.PLAN,
                                            **how)  # fmt: skip
        if alt_units:
            m_alt = s.measure(alt)
            if m_alt.risk < m.risk:
                units, plan, pred, m = alt_units, alt, alt_pred, m_alt
                target = Values.PLAN
    return units, plan, pred, m, target


def flops_mode(s: _Search, fraction: float, rounds: int, traj: list[dict]) -> None:
    """Rounds until the modelled FLOPs (analysis.flop_model) are at most `fraction` of the
    original's, each saving half of what is left to save (all of it from round `rounds` on)
    by predicted risk per FLOP saved. A few extra rounds close what first-order savings leave
    (units removed together at both ends of a conv save less than each alone)."""
    fm = s.flop_model()
    goal = fraction * fm.base
    prev = 0.0
    r = 0
    while r < rounds + 3:
        gap = fm.flops(s.plan.removed) - goal
        if gap <= 1e-9 * fm.base:
            break
        r += 1
        want = gap if r >= rounds else gap / 2
        if s.progress:
            s.progress("round", r, max(rounds, r))
        saves = fm.savings(s.plan.removed)

        def focus(pre: dict[str, float], saves=saves, want=want) -> list[str]:
            order = sorted((u for u in pre if saves.get(u, 0) > 0),
                           key=lambda u: (pre[u] / saves[u], u))  # fmt: skip
            n = int(np.searchsorted(np.cumsum([saves[u] for u in order]), want)) + 1
            return probe_band(n, s.probe_fraction, s.max_probes)({u: i for i, u in
                                                                 enumerate(order)})  # fmt: skip

        sc = s.analyse(r, focus)
        units, plan, pred, m, target = _best_target(s, sc, {"flops": (saves, want, r >= rounds)},
                                                    True)  # fmt: skip
        if not units:  # every cut down to one unit: the goal is out of reach (api says so)
            break
        s.plan = plan
        m = m or s.measure(s.plan)
        record_round(s, traj, r, s.plan, units, pred, m, prev, True, target)
        prev = m.risk
    if s.progress:
        s.progress("round", r, r)


def polish_plan(s: _Search, cur: Metrics, traj: list[dict]) -> Metrics:
    """The last round's removals were fitted before their upstream neighbours went: refit every
    removed unit under the final plan's statistics; kept only if the held-out risk drops (and,
    for target rules, the target still holds)."""
    if not s.plan.removed or cur.risk is None:
        return cur
    # the search's statistics are not needed after it: shrink_folds reuses the refit's
    plan, m = s.refitted(s.plan, len(traj) + 100, interventions=True, keep_stats=False)
    better = m.risk is not None and m.risk < cur.risk
    if better and s.rule in ("min_fidelity", "min_iia"):
        better = s.meets(plan, m)
    traj.append({"round": traj[-1]["round"] + 1, "refit": True,
                 "kept": len(s.ug.prunable) - len(plan.removed), "removed": 0,
                 "predicted_risk": None, "risk": m.risk, "fidelity": m.fidelity,
                 "iia": m.iia, "accepted": better})  # fmt: skip
    emit_row(s, traj)
    if better:
        s.plan = plan
        return m
    return cur


def shrink_folds(s: _Search, cur: Metrics, traj: list[dict]) -> Metrics:
    """Folds extrapolate: when most of a layer is gone, the units they follow are far from the
    original's, and a constant can be the safer replacement. Each fold is blended with its
    unit's constant, r = lam * fold + (1 - lam) * constant, for lam in SHRINK; the blend with
    the lowest held-out risk is kept if it beats the current plan (and still meets a target)."""
    folded = [u for u, a in s.plan.actions.items() if a.kind == "folded"]
    if not folded or cur.risk is None:
        return cur
    # the last polish refit's statistics stand for a new pass when it removed the same units
    # and they hold the original's values: those depend on which units are removed (the
    # interchanges' kept masks), not on how they are replaced, and the constants fit to them
    removed, stats = s.refit_stats or (None, None)
    if removed == frozenset(s.plan.removed) and all(c.original for c in stats.cuts.values()):
        s.stats = stats
    else:
        s.analyse_stats(len(traj) + 200)
    consts = s.refit_removed(fold=False)
    best, best_m = None, cur
    for lam in s.cfg.shrink:
        plan = copy.deepcopy(s.plan)
        for u in folded:
            for t, rep in plan.actions[u].at.items():
                c = consts.actions[u].at[t].offset
                rep.offset = np.asarray(lam * rep.offset + (1 - lam) * c, dtype=np.float64)
                rep.coef = {k: lam * a for k, a in rep.coef.items()} if lam > 0 else {}
            if lam == 0:
                plan.actions[u].kind = "constant"
        m = s.measure(plan)
        ok = m.risk is not None and m.risk < best_m.risk
        if ok and s.rule in ("min_fidelity", "min_iia"):
            ok = s.meets(plan, m)
        traj.append({"round": traj[-1]["round"] + 1, "refit": True, "shrink": lam,
                     "kept": len(s.ug.prunable) - len(plan.removed), "removed": 0,
                     "predicted_risk": None, "risk": m.risk, "fidelity": m.fidelity,
                     "iia": m.iia, "accepted": ok})  # fmt: skip
        emit_row(s, traj)
        if ok:
            best, best_m = plan, m
    if best is not None:
        s.plan = best
    return best_m


def meets_rule(rule: str, value: float, m: Metrics) -> bool:
    if rule == "budget":
        return m.risk <= value
    if rule == "min_fidelity":
        return m.fidelity >= value
    return m.iia >= value


def budget_mode(s: _Search, rule: str, value: float, rounds: int, traj: list[dict]) -> None:
    calibrated = rule == "budget" and get_criterion(s.criterion).calibrated
    cal = 1.0
    cur = 0.0  # measured risk of the current plan
    step = None
    floor = max(1, int(s.cfg.min_step * len(s.ug.prunable)))  # the smallest prefix tried
    for r in range(1, rounds + 1):
        cands = s.candidates()
        if not cands:
            break
        if s.progress:
            s.progress("round", r, rounds)

        def size(pre: dict[str, float], cal=cal, cur=cur, step=step) -> int:
            if calibrated:
                vals = np.cumsum([pre[u] for u in sorted(pre, key=lambda u: (pre[u], u))]) * cal
                return max(1, int(np.searchsorted(vals, 0.5 * (value - cur), side="right")))
            return step or int(math.ceil(len(pre) / 2))

        holder: dict[str, int] = {}

        def focus(pre: dict[str, float], holder=holder, size=size) -> list[str]:
            holder["n"] = size(pre)
            return probe_band(holder["n"], s.probe_fraction, s.max_probes)(pre)

        sc = s.analyse(r, focus)
        n = size(sc.risk if calibrated else sc.rank)
        accepted = False
        trace: list[float] = []
        if calibrated:  # the joint model's own budget: half of what is left
            units, plan, pred = s.choose(sc, budget=0.5 * (value - cur) / cal, trace=trace,
                                         target=Values.PLAN)  # fmt: skip
            if not units:
                units, plan, pred = s.choose(sc, count=1, trace=trace, target=Values.PLAN)
        else:
            units, plan, pred = s.choose(sc, count=n, trace=trace, target=Values.PLAN)
        while units:
            m = s.measure(plan, interventions=rule != "min_fidelity")
            ok = s.meets(plan, m)
            if not ok and s.cfg.refit_on_fail:
                # the prefix's fits predate each other's removal: refit every removed unit
                # under this plan's statistics before giving the prefix up
                refit, m_refit = s.refitted(plan, r + 500, interventions=rule != "min_fidelity")
                if s.meets(refit, m_refit):
                    plan, m, ok = refit, m_refit, True
            record_round(s, traj, r, plan, units, pred, m, cur, ok)
            if ok:
                if calibrated and pred > 0 and m.risk is not None:
                    cal = float(np.clip((m.risk - cur) / pred, 0.1, 10.0))
                cur = m.risk if m.risk is not None else cur
                s.plan = plan
                step = len(units)
                accepted = True
                break
            units = units[: len(units) // 2]  # the greedy order's prefix, refitted
            if len(units) < floor:
                units = []
            pred = trace[len(units) - 1] if units and trace else float("nan")
            plan = s.extend(sc, units, Values.PLAN) if units else plan
        if not accepted:
            break
