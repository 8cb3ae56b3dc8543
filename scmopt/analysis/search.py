"""The budgeted, iterative search of DESIGN §2: statistics and curvature under the current plan,
score, remove the best prefix, measure on held-out data, repeat.

Stopping rules (exactly one): `keep` (fraction of prunable units kept; the exact count is
reached over a few rounds that each remove half of what is left), `budget` (max normalised
interventional risk), `min_fidelity`, `min_iia`. With a budget the prefix is the largest whose
predicted risk (calibrated by earlier rounds' measured/predicted ratio) fits half the remaining
budget; fidelity and IIA targets, and uncalibrated criteria, size the prefix by count. A prefix
is accepted only if the held-out measurement meets the target (a fidelity target also on the fit
split, see _Search.meets); otherwise it is halved.

Fit targets (keep mode): from round 2 on, statistics also hold the ORIGINAL network's values
on the same inputs and interventions; each round selects and fits its removals once toward the
original's values and once toward the current plan's, and keeps the plan with the lower
held-out risk (neither wins everywhere: the original's values help the residual network, the
plan's the plain CNN). After the last round every removed unit is refitted toward the
original's values under the final plan (the last round's removals were fitted before their
upstream neighbours went); that refit is kept only if the held-out risk drops, and repeated (at
most 3 times) while it does. Budget rules fit
toward the plan's values and get the same final refit; with a fidelity or IIA target (or a
budget) a prefix that misses the target is first refitted as a whole (every removed unit, under
the statistics of the plan it belongs to) and only halved if it still misses. Last, every fold
is blended with its unit's constant (weights 0.5 and 0: constants only) and a blend replaces the
plan only when it lowers the held-out risk: at extreme sparsity folds follow kept units that are
far from the original's and extrapolate (resnet_digits keep 0.1: held-out risk 0.89 -> 0.82).

Constants and folds are fitted on the fit split only; every reported metric is measured on the
held-out split. A plan never removes the last kept unit of a cut.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scmopt.analysis.arguments import check_arguments
from scmopt.analysis.budget import node_macs, probe_budget
from scmopt.analysis.config import SearchConfig
from scmopt.analysis.criteria import criterion as get_criterion
from scmopt.analysis.curvature import Prober
from scmopt.analysis.curvature import coupling as curv_coupling
from scmopt.analysis.flop_model import FlopModel
from scmopt.analysis.groups import group_of, keep_targets
from scmopt.analysis.measure import Evaluator, Metrics, Runner
from scmopt.analysis.rules import (
    Checkpoint,
    budget_mode,
    flops_mode,
    keep_mode,
    meets_rule,
    polish_plan,
    shrink_folds,
)
from scmopt.analysis.scoring import Fit, Scorer, Scores, apply, risks
from scmopt.analysis.selection import select
from scmopt.analysis.stats import Stats, Values, collect
from scmopt.errors import ScmoptError
from scmopt.plan import Plan
from scmopt.runtime import work
from scmopt.runtime.sessions import return_memory
from scmopt.units.analysis import UnitGraph

Progress = Callable[[str, int, int], None]


@dataclass
class SearchResult:
    plan: Plan
    trajectory: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    # the rounds' accepted plans, oldest first (each removes what the one before it did and
    # more); the final plan (after polish) is `plan`, not one of them
    checkpoints: list[Checkpoint] = field(default_factory=list)


class _Search:
    """State shared by the rounds (sessions, splits, plan, timings)."""

    def __init__(self, ug, data, labels, cfg: SearchConfig, progress) -> None:
        self.cfg = cfg
        seed, device = cfg.seed, cfg.device
        self.ug = ug
        self.progress = progress
        self.timing: dict[str, float] = {}
        self._flops: FlopModel | None = None
        t0 = time.perf_counter()
        n = len(next(iter(data.values())))
        rng = np.random.default_rng([seed, 1])
        perm = rng.permutation(n)
        n_hold = min(n - 2, max(2, int(round(cfg.holdout * n))))
        hold, fit = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        self.fit = {k: v[fit] for k, v in data.items()}
        self.hold = {k: v[hold] for k, v in data.items()}
        # padding mask of the fit split: padding tokens count in no statistic
        self.mask = self.fit.get(cfg.mask_input) if cfg.mask_input else None
        self.runner = Runner(ug, self.fit, device=device, batch_size=cfg.batch_size)
        self.evaluator = Evaluator(
            self.runner,
            self.hold,
            None if labels is None else labels[hold],
            p=cfg.p,
            seed=seed,
            metric=cfg.metric,
            one_cut=cfg.one_cut_checks,
        )
        self.prober = Prober(ug, self.runner.sites, batched=self.runner.batched, device=device)
        k = min(len(fit), cfg.curvature_samples)
        probe_idx = np.sort(np.random.default_rng([seed, 2]).choice(len(fit), k, replace=False))
        probe = {kk: v[probe_idx] for kk, v in self.fit.items()}
        screen, self.unit_cap = probe_budget(ug, self.prober, self.fit, k, cfg)
        self.scorer = Scorer(ug, self.prober, probe, self.fit, eps=cfg.eps, central=cfg.central,
                             seed=seed, max_coef=cfg.max_coef, screen_samples=screen)  # fmt: skip
        self.fit_evaluator: Evaluator | None = None
        self.plan = Plan()
        self.checkpoints: list[Checkpoint] = []
        self.out_var: float | None = None
        self.scores: dict[str, float] = {}
        # the statistics of the last `refitted` plan and its removed set: the original's
        # values in them depend on the removed set alone (rules.shrink_folds reuses them)
        self.refit_stats: tuple[frozenset[str], Stats] | None = None
        self._add("setup", t0)

    # the options the rounds read, from the one config
    criterion = property(lambda self: self.cfg.criterion)
    fold = property(lambda self: self.cfg.fold)
    p = property(lambda self: self.cfg.p)
    seed = property(lambda self: self.cfg.seed)
    batch_size = property(lambda self: self.cfg.batch_size)
    probe_fraction = property(lambda self: self.cfg.probe_fraction)
    max_probes = property(lambda self: self.unit_cap)  # cfg.max_probes within the budget
    step = property(lambda self: self.cfg.step)
    rule = property(lambda self: self.cfg.rule)
    rule_value = property(lambda self: self.cfg.rule_value)

    def _add(self, key: str, t0: float) -> None:
        self.timing[key] = self.timing.get(key, 0.0) + time.perf_counter() - t0

    def candidates(self) -> list[str]:
        return sorted(u for u in self.ug.prunable if u not in self.plan.actions)

    def analyse_stats(self, round_: int, original: bool = True) -> Stats:
        """Statistics under the current plan (with the original's values: refits), made the
        current ones."""
        t0 = time.perf_counter()
        self.stats = None  # the last round's moments go before the new ones are made (memory)
        return_memory()
        with work.stage("statistics"):
            self.stats = collect(self.runner, self.fit, self.plan, p=self.p,
                                 seed=self.seed * 1000 + round_, progress=self.progress,
                                 original=original, mask=self.mask)  # fmt: skip
        self._add("stats", t0)
        return self.stats

    def analyse(self, round_: int, focus) -> Scores:
        """Statistics and scores of the candidates under the current plan."""
        toward = self.cfg.toward_original and self.rule == "keep" and self.step is None
        stats = self.analyse_stats(round_, original=toward)
        if self.out_var is None:
            self.out_var = stats.out_variance  # the original's output variance
        t0 = time.perf_counter()
        if self.progress:  # progress lines name the stage that runs (not the last "stats")
            self.progress("curvature probes", 0, 1)
        with work.stage("curvature probes"):
            sc = self.scorer.score(stats, self.plan, self.prober.plan_feeds(self.plan),
                                   self.candidates(), self.criterion, fold=self.fold,
                                   out_var=self.out_var, focus=focus,
                                   round_seed=round_)  # fmt: skip
            self.prober.release()  # the next probes are a round away: their sessions go
        self._add("scoring", t0)
        self.scores.update(sc.rank)  # kept units end with their latest score
        for k, v in sc.seconds.items():
            self.timing[k] = self.timing.get(k, 0.0) + v
        return sc

    def refit_removed(self, fold: bool | None = None) -> Plan:
        """Every removed unit refitted toward the original network's values, from the units
        kept now (under this round's statistics, so upstream replacements are accounted for).
        fold=False: constants only."""
        fold = self.fold if fold is None else fold
        removed = sorted(self.plan.removed)
        kept = {u for u in self.ug.units if u not in self.plan.actions}
        fits = self.scorer.fits(self.stats, kept, removed, fold)
        plan = Plan()
        for u in removed:
            folds = fold and any(f.pred and f.resid < f.var for f in fits[u].values())
            apply(plan, u, fits[u], "folded" if folds else "constant", self.ug)
        return plan

    def order(self, sc: Scores) -> list[str]:
        return sorted(sc.rank, key=lambda u: (sc.rank[u], u))

    def prefix(self, order: list[str], n: int, quota: dict[str, int] | None = None) -> list[str]:
        """The first n units of `order` whose removal leaves every cut a kept unit (and, with
        `quota`, at most that many of each group)."""
        left = {t: sum(u not in self.plan.actions for u in c.units)
                for t, c in self.ug.cuts.items()}  # fmt: skip
        room = dict(quota) if quota is not None else None
        out = []
        for u in order:
            if len(out) == n:
                break
            if room is not None:
                if room.get(group_of(self.ug, u), 0) < 1:
                    continue
                room[group_of(self.ug, u)] -= 1
            cuts = self.ug.units[u].cuts
            count = {t: self.ug.cuts[t].units.count(u) for t in cuts}
            if any(left[t] - count[t] < 1 for t in cuts):
                if room is not None:
                    room[group_of(self.ug, u)] += 1
                continue
            for t in cuts:
                left[t] -= count[t]
            out.append(u)
        return out

    def allowance(self, quota: dict[str, int] | None = None) -> Callable[[str, list[str]], bool]:
        """allowed(u, chosen): removing u after `chosen` (one greedy's list, which only
        grows) leaves every cut u occupies a kept unit and, with `quota`, leaves u's group
        (analysis.groups) within its count. Counts kept units per cut and chosen units per
        group once and updates them from what `chosen` gained since the last call."""
        left = {t: len({v for v in c.units if v not in self.plan.actions})
                for t, c in self.ug.cuts.items()}  # fmt: skip
        taken: dict[str, int] = {}
        seen = [0]

        def allowed(u: str, chosen: list[str]) -> bool:
            for v in chosen[seen[0] :]:
                for t in self.ug.units[v].cuts:
                    left[t] -= 1
                taken[group_of(self.ug, v)] = taken.get(group_of(self.ug, v), 0) + 1
            seen[0] = len(chosen)
            g = group_of(self.ug, u)
            if quota is not None and taken.get(g, 0) >= quota.get(g, 0):
                return False
            return all(left[t] >= 2 for t in self.ug.units[u].cuts)

        return allowed

    def retarget(self, sc: Scores, target: str) -> Scores:
        """The same scores with the candidates fitted toward `target` values (same kappa)."""
        kept = {u for u in self.ug.units if u not in self.plan.actions}
        fits = self.scorer.fits(self.stats, kept, list(sc.fits), self.fold, target)
        const, folded, action = risks(self.ug, self.stats, sc.kappa, fits, self.out_var,
                                      self.fold)  # fmt: skip
        risk = {u: folded[u] if action[u] == "folded" else const[u] for u in sc.fits}
        rank = risk if get_criterion(self.criterion).ranks_by_risk else sc.rank
        return dataclasses.replace(sc, rank=dict(rank), risk=risk, const_risk=const,
                                   fold_risk=folded, action=action, fits=fits)  # fmt: skip

    def choose(self, sc: Scores, count: int | None = None, budget: float | None = None,
               trace: list[float] | None = None, target: Values = Values.ORIGINAL,
               quota: dict[str, int] | None = None,
               flops: tuple[dict[str, float], float, bool] | None = None,
               ) -> tuple[list[str], Plan, float]:  # fmt: skip
        """Units to remove now and the resulting plan. Criteria with a risk model use the lazy
        greedy of selection.select; magnitude and random take their ranking's prefix. `quota`:
        at most this many units of each group (analysis.groups). `flops`: (FLOPs each unit
        saves, FLOPs to save, strict): by risk per FLOP until the savings reach the goal
        (selection.select)."""
        t0 = time.perf_counter()
        if self.progress:
            self.progress("selection", 0, 1)
        if flops is None and self.cfg.per_flop:  # the rule's own stop, ranked per FLOP
            flops = (self.flop_model().savings(self.plan.removed), math.inf, False)
        try:
            with work.stage("selection"):
                return self._choose(sc, count, budget, trace, target, quota, flops)
        finally:
            self._add("selection", t0)

    def _choose(self, sc: Scores, count: int | None, budget: float | None,
                trace: list[float] | None, target: str, quota: dict[str, int] | None,
                flops: tuple[dict[str, float], float, bool] | None,
                ) -> tuple[list[str], Plan, float]:  # fmt: skip
        allowed = self.allowance(quota)
        if not get_criterion(self.criterion).ranks_by_risk:
            if flops is None or math.isinf(flops[1]):
                units = self.prefix(self.order(sc), count or 0, quota)
            else:  # the ranking's prefix that saves the FLOPs asked for
                saves, goal, _ = flops
                units, saved = [], 0.0
                for u in self.prefix(self.order(sc), len(sc.rank)):
                    if saved >= goal:
                        break
                    if saves.get(u, 0.0) > 0:
                        units.append(u)
                        saved += saves[u]
            return units, self.extend(sc, units, target), float("nan")
        kept = {u for u in self.ug.units if u not in self.plan.actions}
        coupling = None
        if get_criterion(self.criterion).coupled:
            coupling = {t: curv_coupling(self.ug, t, sc.kappa[t]) for t in self.stats.cuts}
        units, fits, pred = select(
            sc, self.stats, lambda k, t: self.scorer.fits(self.stats, k, t, self.fold, target),
            kept,
            fold=self.fold, out_var=self.out_var, coupling=coupling, count=count,
            budget=budget, allowed=allowed, trace=trace, target=target, flops=flops,
            leaning=self.leaning(),
        )  # fmt: skip
        return units, self._build(sc, units, fits), pred

    def leaning(self) -> dict[str, dict[str, np.ndarray]]:
        """Per cut and kept unit: the coefficients of the plan's folds on it, per channel."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for uid, act in self.plan.actions.items():
            if act.kind != "folded":
                continue
            for t, rep in act.at.items():
                cut = self.ug.cuts[t]
                ch = cut.unit_channels[uid]
                for k, a in rep.coef.items():
                    vec = out.setdefault(t, {}).setdefault(k, np.zeros(cut.channels))
                    vec[ch] += a
        return out

    def _build(self, sc: Scores, units: list[str], fits: dict[str, dict[str, Fit]]) -> Plan:
        plan = copy.deepcopy(self.plan)
        const, folded, _ = risks(self.ug, self.stats, sc.kappa, fits, self.out_var, self.fold)
        for u in units:
            fold = self.fold and folded[u] < const[u] and any(f.pred for f in fits[u].values())
            apply(plan, u, fits[u], "folded" if fold else "constant", self.ug)
        _substitute(plan, set(units))
        return plan

    def extend(self, sc: Scores, units: list[str], target: Values = Values.ORIGINAL) -> Plan:
        """The current plan plus `units`, refitted onto the units that stay kept."""
        gone = self.plan.removed | set(units)
        kept = {u for u in self.ug.units if u not in gone}
        return self._build(sc, units, self.scorer.fits(self.stats, kept, units, self.fold,
                                                       target))  # fmt: skip

    def flop_model(self) -> FlopModel:
        """The FLOPs of one sample as a function of the removed units (made once)."""
        if self._flops is None:
            self._flops = FlopModel(self.ug, node_macs(self.ug, self.fit, self.cfg.device))
        return self._flops

    def targets(self) -> bool:
        """The statistics hold the original's values, so both fit targets are available."""
        return self.cfg.try_targets and any(c.original for c in self.stats.cuts.values())

    def refitted(self, plan: Plan, stats_round: int, interventions: bool,
                 keep_stats: bool = True) -> tuple[Plan, Metrics]:  # fmt: skip
        """`plan` with every removed unit refitted toward the original's values under the
        statistics of `plan` itself, and its held-out metrics; the search state is unchanged
        but for `keep_stats=False`, which lets the current statistics go first (one set of
        moments alive instead of two: the final refits need only theirs)."""
        saved = self.plan, (self.stats if keep_stats else None)
        self.refit_stats = None  # at most two sets of moments alive (memory)
        try:
            self.plan = plan
            self.analyse_stats(stats_round)
            refit = self.refit_removed()
            self.refit_stats = frozenset(plan.removed), self.stats
        finally:
            self.plan, self.stats = saved
        return refit, self.measure(refit, interventions=interventions)

    def meets(self, plan: Plan, m: Metrics) -> bool:
        """The stopping rule holds for `plan` (held-out metrics `m`). A fidelity target must also
        hold on the fit split: a search makes many accept/reject decisions on one small held-out
        split, and the plans it accepts at the threshold pass there by luck more often than on
        new data (mlp_digits at 0.99: held-out 0.990, fit split 0.977, new data 0.961)."""
        if not meets_rule(self.rule, self.rule_value, m):
            return False
        if self.rule != "min_fidelity":
            return True
        t0 = time.perf_counter()
        if self.fit_evaluator is None:
            self.fit_evaluator = Evaluator(
                self.runner, self.fit, None, p=self.p, seed=self.seed, metric=self.cfg.metric
            )
        with work.stage("held-out checks"):
            m_fit = self.fit_evaluator.evaluate(plan, interventions=False)
        ok = m_fit.fidelity >= self.rule_value
        self._add("measure", t0)
        return ok

    def measure(self, plan: Plan, interventions: bool = True) -> Metrics:
        t0 = time.perf_counter()
        with work.stage("held-out checks"):
            m = self.evaluator.evaluate(plan, interventions=interventions, progress=self.progress)
        self._add("measure", t0)
        return m


def _substitute(plan: Plan, gone: set[str]) -> None:
    """Folds of earlier rounds that lean on units removed now lean on their replacements."""
    for uid, act in plan.actions.items():
        if uid in gone or act.kind != "folded":
            continue
        for t, rep in act.at.items():
            hit = [k for k in rep.coef if k in gone]
            for k in hit:
                a = rep.coef.pop(k)
                new = plan.actions[k].at[t]
                rep.offset = np.asarray(rep.offset + a * new.offset, dtype=np.float64)
                for l_, g in new.coef.items():
                    rep.coef[l_] = rep.coef.get(l_, 0.0) + a * g


def search(
    ug: UnitGraph,
    data: dict[str, np.ndarray],
    config: SearchConfig | None = None,
    *,
    progress: Progress | None = None,
    labels: np.ndarray | None = None,
    **options,
) -> SearchResult:
    """Finds a sparse abstraction of `ug.model` on `data` (input name -> array; an optional
    'y' entry, or `labels`, gives labels for accuracy). See the module docstring; options are
    the fields of SearchConfig (given as `config` or as keywords, not both).

    rounds: max rounds (default 4 for keep, 10 otherwise); step: units removed per round
    (keep mode; 1 with criterion='ablation' is the greedy brute-force baseline).
    probe_fraction / max_probes: per round, the per-unit curvature probes go to the units the
    layer screen ranks around the cut-off, `probe_fraction` of the candidates but at most
    `max_probes` (each costs 2 x curvature_samples passes below its cut: the dominant cost on
    networks with thousands of channels); the others keep the screen's rescaled estimate."""
    if config is not None and options:
        raise ScmoptError("give search options as a SearchConfig or as keywords, not both")
    cfg = config if config is not None else SearchConfig(**options)
    with _blas_single_thread():
        return _search(ug, data, cfg, progress, labels)


def _blas_single_thread():
    """The analysis multiplies many small matrices; OpenBLAS threads only add overhead there
    (3-4x slower on a busy 2-core machine), so they are limited when threadpoolctl exists."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _search(ug, data, cfg: SearchConfig, progress, labels) -> SearchResult:
    t_start = time.perf_counter()
    budget, min_fidelity, min_iia, keep = cfg.budget, cfg.min_fidelity, cfg.min_iia, cfg.keep
    criterion, fold, p, batch_size = cfg.criterion, cfg.fold, cfg.p, cfg.batch_size
    holdout, rounds, step, max_probes = cfg.holdout, cfg.rounds, cfg.step, cfg.max_probes
    data = dict(data)
    if "y" in data and "y" not in {i.name for i in ug.model.graph.input}:
        y = data.pop("y")
        labels = y if labels is None else labels
    rule = check_arguments(ug, data, budget, min_fidelity, min_iia, keep, criterion, p, holdout,
                  batch_size, cfg.flops)  # fmt: skip
    if isinstance(max_probes, bool) or not isinstance(max_probes, int) or max_probes < 4:
        raise ScmoptError(f"max_probes must be an integer >= 4, not {max_probes!r}")
    if labels is not None and len(labels) != len(next(iter(data.values()))):
        raise ScmoptError(f"{len(labels)} labels for {len(next(iter(data.values())))} samples")
    prunable = ug.prunable
    targets = None
    if cfg.keep_heads is not None and not (rule == "keep" and 0 < cfg.keep_heads <= 1):
        raise ScmoptError(
            f"keep_heads must be a fraction in (0, 1] given with keep, not "
            f"{cfg.keep_heads!r}" + ("" if rule == "keep" else f" with {rule}")
        )
    if rule == "keep":
        targets = keep_targets(ug, keep, cfg.keep_heads)
    s = _Search(ug, data, labels, cfg, progress)
    traj = [{"round": 0, "kept": len(prunable), "removed": 0, "predicted_risk": 0.0,
             "risk": 0.0, "fidelity": 1.0, "iia": 1.0, "accepted": True}]  # fmt: skip
    if rule == "keep":
        keep_mode(s, targets, rounds or 4, step, traj)
    elif rule == "flops":
        flops_mode(s, cfg.flops, rounds or 4, traj)
    else:
        budget_mode(s, rule, {"budget": budget, "min_fidelity": min_fidelity,
                               "min_iia": min_iia}[rule], rounds or 10, traj)  # fmt: skip
    final = s.measure(s.plan)
    for _ in range(cfg.polish):
        before = final
        final = polish_plan(s, final, traj)
        if final is before:  # rejected: a further refit would start from the same plan
            break
        if final.risk > (1 - cfg.polish_gain) * before.risk:  # small gain: smaller next
            break
    if fold and cfg.shrink:
        final = shrink_folds(s, final, traj)
    metrics = final.as_dict()
    kept = len(s.candidates())
    metrics.update(prunable=len(prunable), kept=kept,
                   kept_fraction=kept / len(prunable) if prunable else 1.0,
                   **s.plan.counts())  # fmt: skip
    s.timing["total"] = time.perf_counter() - t_start
    return SearchResult(s.plan, traj, metrics, s.scores, s.timing, s.checkpoints)
