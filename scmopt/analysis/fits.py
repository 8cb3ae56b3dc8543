"""Replacement fits of one cut (DESIGN §2): a unit's constant (its mean under I, per position)
and its fold onto a few kept units of the same cut, chosen greedily by residual reduction among
the most correlated ones (ridge-regularised least squares on the interventional moments of
scmopt.analysis.stats; the unit is never swapped, its predictors are). alpha = 0 is a
constant, so a fold's residual never exceeds the constant's.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

import numpy as np

from scmopt.analysis import curvature as curv
from scmopt.analysis.stats import CutStats, Values
from scmopt.units.analysis import UnitGraph


@dataclass
class Fit:
    """A unit's constant and fold at one cut (pooled per-position moments)."""

    cut: str
    channels: list[int]
    mean: np.ndarray  # [P] constant offset (per position; [1] when pooled)
    var: float  # constant residual, per position
    pred: list[str] = field(default_factory=list)  # predictor unit ids
    pred_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: np.ndarray | None = None  # fold offset [P]
    resid: float = np.inf  # fold residual, per position

    def direction(self, fold: bool) -> curv.Direction:
        if fold and self.pred:
            return curv.Direction(self.channels, self.pred_idx, self.coef, self.offset)
        return curv.Direction(self.channels, np.zeros(0, int), np.zeros(0), self.mean)

    def residual(self, fold: bool) -> float:
        return min(self.var, self.resid) if fold else self.var


def kept_units(cut, kept: Container[str]) -> np.ndarray:
    """A bool per unit of `cut` (unit_channels order): in `kept`. A container that can answer
    for a whole cut at once (`units_mask(cut)`, the greedy's, asked thousands of times per
    round) does so; any other is asked unit by unit."""
    fast = getattr(kept, "units_mask", None)
    if fast is not None:
        return fast(cut)
    return np.fromiter((u in kept for u in cut.unit_channels), bool, len(cut.unit_channels))


def fit_cut(
    ug: UnitGraph,
    cs: CutStats,
    targets: list[str],
    kept: Container[str],
    *,
    fold: bool = True,
    max_coef: int = 6,
    pool: int = 16,
    ridge: float = 1e-3,
    target: Values = Values.ORIGINAL,
) -> dict[str, Fit]:
    """Constant and (optionally) fold of every target unit at cut `cs.cut`; predictors are the
    kept units of the cut other than the target. target ORIGINAL: fit toward the original
    network's values (when the statistics hold them, see stats.collect), PLAN: the plan's."""
    cut = ug.cuts[cs.cut]
    first = cut.unit_channels
    mu = cs.mean  # predictors: the plan's values
    var = cs.variance
    tmu = (
        cs.target_mean if target == Values.ORIGINAL else mu
    )  # targets: original values (when measured)
    tvar = cs.target_variance if target == Values.ORIGINAL else var
    cov1 = cov2 = None
    if fold:
        cov1, cov2 = cs.covariance(1, Values.PLAN, target), cs.covariance(2)
    kc = cut.first_channels[kept_units(cut, kept)]
    kept_idx = kc[var[kc] > 0]
    memo = cs.memo.setdefault(("fold", target), {})
    names = cut.units  # a fresh list per access: once, not per predictor
    fits = {}
    for j in targets:
        chans = first[j]
        jj = chans[0]
        fit = Fit(cs.cut, chans, tmu[jj].copy(), float(tvar[jj]))
        if fold and len(kept_idx) and tvar[jj] > 0:
            cand = kept_idx[kept_idx != jj]
            _fold(fit, cand, cov1, cov2, mu, tmu, float(tvar[jj]), jj, max_coef, pool, ridge, memo)
            fit.pred = [names[i] for i in fit.pred_idx]
        fits[j] = fit
    return fits


def _fold(fit, cand, cov1, cov2, mu, tmu, vj, jj, max_coef, pool, ridge, memo) -> None:
    """Greedy forward selection by exact residual reduction over the most correlated pool.
    cov1[k, j]: predictor k (plan) x target j (original); cov2: predictors; vj: target var.
    `memo` (per set of moments and target kind): the selection depends only on (j, pool), and
    the search refits the same folds many times (every candidate's users, every step)."""
    if len(cand) == 0:
        return
    dk = np.clip(np.diag(cov2)[cand], 1e-30, None)
    corr = np.abs(cov1[cand, jj]) / np.sqrt(dk * vj)
    cand = cand[_top(-corr, pool)]
    key = (jj, cand.tobytes(), max_coef, ridge)
    if key not in memo:
        memo[key] = _forward(cov1, cov2, cand, jj, vj, max_coef, ridge)
    chosen, coef, resid = memo[key]
    if not chosen:
        return
    fit.pred_idx = np.array(chosen, dtype=int)
    fit.coef = coef.copy()
    fit.offset = tmu[jj] - coef @ mu[chosen]
    fit.resid = resid


def _top(neg: np.ndarray, k: int) -> np.ndarray:
    """np.argsort(neg, kind="stable")[:k] without sorting all of neg: the k smallest, ties in
    index order (a cut has up to thousands of candidates; k is the pool of 16)."""
    if len(neg) <= 2 * k:
        return np.argsort(neg, kind="stable")[:k]
    kth = np.partition(neg, k - 1)[k - 1]
    if np.isnan(kth):
        return np.argsort(neg, kind="stable")[:k]
    below = np.flatnonzero(neg < kth)
    idx = np.concatenate([below, np.flatnonzero(neg == kth)[: k - len(below)]])
    return idx[np.argsort(neg[idx], kind="stable")]


def _forward(cov1, cov2, cand, jj, vj, max_coef, ridge) -> tuple[list[int], np.ndarray, float]:
    """(chosen predictors, coefficients, residual) of the forward selection over `cand`.
    The pool's blocks are gathered once (the same values _ls_batch would gather from the whole
    cut's matrices, so the same solves): 28% less time per selection at 1,000 channels."""
    cand = np.asarray(cand, dtype=int)
    a_pool, c_pool = cov2[np.ix_(cand, cand)], cov1[cand, jj]
    d_pool = np.diagonal(a_pool)
    chosen: list[int] = []  # positions in the pool
    left = np.ones(len(cand), dtype=bool)
    best = (vj, np.zeros(0))
    for step in range(min(max_coef, len(cand))):
        rest = np.flatnonzero(left)
        if not len(rest):
            break
        # every candidate set chosen + [k] solved in one batched call (Python loops cost more
        # than the tiny solves themselves)
        sets = np.empty((len(rest), step + 1), dtype=int)
        sets[:, :step], sets[:, step] = chosen, rest
        r, a = _ls_batch(a_pool, c_pool, d_pool, sets, vj, ridge)
        i = int(np.argmin(r))  # first minimum: the candidate order breaks ties
        if best[0] - r[i] <= 1e-6 * vj:
            break
        best = (float(r[i]), a[i])
        chosen = sets[i].tolist()
        left[rest[i]] = False
    return cand[chosen].tolist(), best[1], float(max(best[0], 0.0))


def _ls_batch(a_pool, c_pool, d_pool, sets, vj, ridge) -> tuple[np.ndarray, np.ndarray]:
    """Residual and coefficients of the ridge least squares for each row of `sets` (positions
    in the pool whose predictor block, target column and diagonal are a_pool, c_pool, d_pool)."""
    a_ss = a_pool[sets[:, :, None], sets[:, None, :]]
    c = c_pool[sets]
    reg = a_ss + ridge * (d_pool[sets][:, :, None] + 1e-30) * np.eye(sets.shape[1])
    try:
        a = np.linalg.solve(reg, c[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a singular set: solve them one by one
        out = [_ls(a_pool, c_pool, list(row), vj, ridge) for row in sets]
        return np.array([o[0] for o in out]), np.stack([o[1] for o in out])
    r = vj - 2 * np.einsum("ki,ki->k", a, c) + np.einsum("ki,kij,kj->k", a, a_ss, a)
    return r, a


def _ls(a_pool, c_pool, s, vj, ridge) -> tuple[float, np.ndarray]:
    a_ss = a_pool[np.ix_(s, s)]
    c = c_pool[s]
    reg = a_ss + ridge * np.diag(np.diag(a_ss) + 1e-30)
    try:
        a = np.linalg.solve(reg, c)
    except np.linalg.LinAlgError:
        a = np.linalg.lstsq(reg, c, rcond=None)[0]
    r = vj - 2 * a @ c + a @ a_ss @ a
    return float(r), a
