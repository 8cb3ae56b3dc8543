"""Per-unit replacement fits and risk scores (DESIGN §2, "second-order criteria").

For each kept prunable unit j at each cut it occupies, under the interventional moments:

- constant: r_j = mu_j (per position); residual E_I||a_j - mu_j||^2;
- fold: r_j = sum_k alpha_k a_k + beta over a few kept units of the same cut, chosen greedily
  by residual reduction among the most correlated ones, ridge-regularised least squares. The
  cross moments treat j as never swapped and its predictors as swapped (the closed form of
  scmopt.stats), so a fold that would not follow a swap shrinks by itself. alpha = 0 is a
  constant, so the fold residual never exceeds the constant's.

risk_j = sum over its cuts of kappa * positions * residual / E||f - E f||^2, with kappa from
scmopt.curvature; the action is the argmin. Criteria (one code path, the ranking differs):
curvature (per-unit finite differences, screened by layer curvature), layer, variance (kappa =
1), ablation (eps = 1 on all fit data), magnitude (L1 norm of consumer weights), random.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field

import numpy as np

from scmopt.analysis import curvature as curv
from scmopt.analysis.criteria import criterion as get_criterion
from scmopt.analysis.fits import Fit, fit_cut
from scmopt.analysis.stats import Stats, Values
from scmopt.plan import Plan
from scmopt.units.analysis import UnitGraph


@dataclass
class Scores:
    """Per candidate unit: rank key, predicted normalised risk, action and fits."""

    rank: dict[str, float]
    risk: dict[str, float]  # predicted normalised risk of the chosen action (NaN: no model)
    const_risk: dict[str, float]
    fold_risk: dict[str, float]
    action: dict[str, str]
    fits: dict[str, dict[str, Fit]]
    kappa: dict[str, np.ndarray] = field(default_factory=dict)  # cut -> per channel
    probed: set[str] = field(default_factory=set)  # units with per-unit curvature probes
    seconds: dict[str, float] = field(default_factory=dict)


def risks(
    ug: UnitGraph,
    stats: Stats,
    kappa: dict[str, np.ndarray],
    fits: dict[str, dict[str, Fit]],
    out_var: float,
    fold: bool,
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """(constant risk, fold risk, action) per unit, summed over the unit's cuts."""
    const, folded, action = {}, {}, {}
    for u, at in fits.items():
        rc = rf = 0.0
        for t, fit in at.items():
            k = float(kappa[t][fit.channels[0]])
            pos = stats.cuts[t].positions
            rc += k * pos * fit.var
            rf += k * pos * fit.residual(fold)
        const[u] = rc / out_var
        folded[u] = rf / out_var
        action[u] = (
            "folded" if fold and rf < rc and any(f.pred for f in at.values()) else "constant"
        )
    return const, folded, action


def apply(plan: Plan, unit: str, fits: dict[str, Fit], action: str, ug: UnitGraph) -> None:
    """Writes the unit's replacement at every cut it occupies into `plan`."""
    if action == "folded":
        at = {}
        for t, fit in fits.items():
            if fit.pred:
                at[t] = (dict(zip(fit.pred, map(float, fit.coef), strict=True)),
                         _offset(fit.offset, ug, t))  # fmt: skip
            else:
                at[t] = ({}, _offset(fit.mean, ug, t))
        plan.set_folded(unit, at)
    else:
        plan.set_constant(unit, {t: _offset(f.mean, ug, t) for t, f in fits.items()})


def _offset(v: np.ndarray, ug: UnitGraph, cut: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    if v.size == 1 or ug.cuts[cut].positions in (None, 1):
        return np.asarray(float(v.mean()))
    return v


def _cost(stats: Stats, kappa: dict[str, np.ndarray], at: dict[str, Fit], out_var: float,
          fold: bool) -> float:  # fmt: skip
    return sum(float(kappa[t][f.channels[0]]) * stats.cuts[t].positions * f.residual(fold)
               for t, f in at.items()) / out_var  # fmt: skip


class Scorer:
    """Scores candidate units under a plan for one criterion (see module docstring)."""

    def __init__(
        self,
        ug: UnitGraph,
        prober: curv.Prober,
        probe_data: dict[str, np.ndarray],
        fit_data: dict[str, np.ndarray],
        *,
        eps: float = 0.05,
        central: bool = True,
        layer_probes: int = 4,
        ablation_chunk: int = 128,
        max_coef: int = 6,
        seed: int = 0,
        screen_samples: int | None = None,
    ) -> None:
        self.ug = ug
        self.prober = prober
        self.probe_data = probe_data
        self.fit_data = fit_data
        self.eps = eps
        self.central = central  # central finite differences (else forward: half the runs)
        self.layer_probes = layer_probes
        self.ablation_chunk = ablation_chunk
        self.seed = seed
        self.max_coef = max_coef
        self.screen_samples = screen_samples  # probe samples the layer screen uses (None: all)
        self.sites = prober.sites
        self.norms = {t: curv.consumer_norms(ug, t) for t in self.sites}

    def fits(self, stats: Stats, kept: Container[str], candidates: list[str], fold: bool,
             target: Values = Values.ORIGINAL):  # fmt: skip
        """Fits of every candidate at every cut it occupies; predictors from `kept`."""
        cand = set(candidates)
        out: dict[str, dict[str, Fit]] = {u: {} for u in candidates}
        needed = {t for u in candidates for t in self.ug.units[u].cuts}
        for t in self.sites:
            if t not in needed:
                continue
            targets = [u for u in self.ug.cuts[t].unit_channels if u in cand]
            if targets:
                fits = fit_cut(self.ug, stats.cuts[t], targets, kept, fold=fold,
                               max_coef=self.max_coef, pool=max(16, 2 * self.max_coef),
                               target=target)  # fmt: skip
                for u, f in fits.items():
                    out[u][t] = f
        return out

    def score(
        self,
        stats: Stats,
        plan: Plan,
        plan_feeds: dict[str, np.ndarray],
        candidates: list[str],
        criterion: str,
        *,
        fold: bool = True,
        out_var: float | None = None,
        focus: Callable[[dict[str, float]], list[str]] | None = None,
        round_seed: int = 0,
    ) -> Scores:
        """Scores of `candidates` under `plan`. For `curvature`, `focus` picks from the layer
        screen's predicted risks the units worth exact per-unit probes (default: all)."""
        import time

        crit = get_criterion(criterion)
        out_var = out_var or stats.out_variance
        secs: dict[str, float] = {}
        t0 = time.perf_counter()
        fits = self.fits(stats, {u for u in self.ug.units if u not in plan.actions},
                         candidates, fold)  # fmt: skip
        secs["fit"] = time.perf_counter() - t0
        kept = {t: np.array([u not in plan.actions for u in self.ug.cuts[t].units])
                for t in self.sites}  # fmt: skip
        t0 = time.perf_counter()
        probed: set[str] = set()
        if crit.curvature == "uniform":
            kappa = curv.uniform(self.ug, self.sites).kappa
        elif crit.curvature == "layer":
            kappa = self._layer(plan_feeds, kept, round_seed)
        elif crit.curvature == "ablation":
            kappa = self._ablation(plan_feeds, fits)
            probed = set(candidates)
        else:
            cache = self._cache(plan_feeds)  # one capture run for the screen and the band
            screen = self._layer(plan_feeds, kept, round_seed, cache)
            _, pre, _ = risks(self.ug, stats, screen, fits, out_var, fold)
            chosen = list(pre) if focus is None else focus(pre)
            kappa = self._unit(plan_feeds, fits, chosen, screen, fold, cache)
            probed = set(chosen)
        secs["curvature"] = time.perf_counter() - t0
        const, folded, action = risks(self.ug, stats, kappa, fits, out_var, fold)
        risk = {u: folded[u] if action[u] == "folded" else const[u] for u in candidates}
        if crit.ranking == "magnitude":
            rank = {u: sum(float(self.norms[t][1][f.channels[0]]) for t, f in fits[u].items())
                    for u in candidates}  # fmt: skip
        elif crit.ranking == "random":
            rng = np.random.default_rng([self.seed, round_seed, 99])
            rank = dict(zip(candidates, rng.random(len(candidates)).tolist(), strict=True))
        else:
            rank = dict(risk)
        if not crit.ranks_by_risk:
            risk = {u: float("nan") for u in candidates}
        return Scores(rank, risk, const, folded, action, fits, kappa, probed, secs)

    def _cache(self, plan_feeds):
        return self.prober.cache(self.probe_data, plan_feeds)

    def _layer(self, plan_feeds, kept, round_seed, cache=None) -> dict[str, np.ndarray]:
        cache = self._cache(plan_feeds) if cache is None else cache
        k = self.screen_samples
        n = len(cache[self.prober.output])
        if k is not None and k < n:  # the screen on the first k probe samples (FPE budget)
            cache = {name: v[:k] if getattr(v, "ndim", 0) and len(v) == n else v
                     for name, v in cache.items()}  # fmt: skip
        c = curv.layer(self.prober, cache, plan_feeds, kept, probes=self.layer_probes,
                       eps=self.eps, seed=self.seed * 1000 + round_seed,
                       central=self.central)  # fmt: skip
        return c.kappa

    def _directions(self, fits, units, fold):
        dirs: dict[str, dict[str, curv.Direction]] = {t: {} for t in self.sites}
        for u in units:
            for t, f in fits[u].items():
                dirs[t][u] = f.direction(fold)
        return dirs

    def _unit(self, plan_feeds, fits, units, screen, fold, cache) -> dict[str, np.ndarray]:
        """Per-unit probes on `units`; the others keep the layer screen's kappa, rescaled per
        cut by the median ratio unit/layer among probed units (so the two rankings mix)."""
        c = curv.unit(self.prober, cache, plan_feeds, self._directions(fits, units, fold),
                      eps=self.eps, central=self.central)  # fmt: skip
        kappa = {}
        ratios_all = []
        per_cut = {}
        for t in self.sites:
            # units that do not move (dead, d = 0) say nothing about the cut's scale
            got = ~np.isnan(c.kappa[t]) & (np.nan_to_num(c.energy[t]) > 1e-30)
            ok = got & (screen[t] > 0)
            r = c.kappa[t][ok] / screen[t][ok]
            per_cut[t] = float(np.median(r)) if len(r) else None
            ratios_all.extend(r.tolist())
        fallback = float(np.median(ratios_all)) if ratios_all else 1.0
        for t in self.sites:
            scale = per_cut[t] if per_cut[t] is not None else fallback
            k = screen[t] * scale
            got = ~np.isnan(c.kappa[t])
            k[got] = c.kappa[t][got]  # dead probed units keep kappa 0: their variance is 0
            kappa[t] = k
        return kappa

    def _ablation(self, plan_feeds, fits) -> dict[str, np.ndarray]:
        """Exact effect of replacing each unit alone by its mean, on all fit data."""
        dirs = self._directions(fits, list(fits), fold=False)
        n = len(next(iter(self.fit_data.values())))
        parts = []
        for s in range(0, n, self.ablation_chunk):
            x = {k: v[s : s + self.ablation_chunk] for k, v in self.fit_data.items()}
            cache = self.prober.cache(x, plan_feeds)
            part = curv.unit(self.prober, cache, plan_feeds, dirs, eps=1.0, central=False)
            part.n = len(next(iter(x.values())))
            parts.append(part)
        merged = curv.merge(parts)
        return {t: np.nan_to_num(k, nan=0.0) for t, k in merged.kappa.items()}
