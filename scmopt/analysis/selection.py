"""Joint selection in the second-order model (DESIGN §2): the residual covariances of fits at a
cut and the lazy greedy that removes units one at a time with their cross terms.

The greedy keeps, per cut, each live unit's ordering term (own risk plus cross terms with the
units already chosen there) and updates it from the rows that changed when a unit is chosen
(the chosen unit and the folds refitted because of it) instead of rebuilding the cut's whole
covariance: a step costs O(units of the cut x predictors^2), not O(units^2), which is what
made a round of EfficientNet-Lite1 (9,747 units, cuts of 1,152 channels) take 15 minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import closing
from typing import TYPE_CHECKING

import numpy as np

from scmopt.analysis.fits import Fit
from scmopt.analysis.lazy_order import LazyOrder
from scmopt.analysis.residuals import Block, ChosenSums, residual_cross, residual_var
from scmopt.analysis.stats import Stats, Values

if TYPE_CHECKING:
    from scmopt.analysis.scoring import Scores


class _Kept:
    """The greedy's kept set, with a bool per unit of each cut asked for (fits.kept_units)
    kept up to date as units go: the refits ask for whole cuts thousands of times a round."""

    def __init__(self, units: set[str]) -> None:
        self.units = units
        self._masks: dict[int, tuple[object, np.ndarray]] = {}  # id(cut) -> (cut, mask)

    def __contains__(self, x: object) -> bool:
        return x in self.units

    def discard(self, u: str) -> None:
        self.units.discard(u)
        for cut, mask in self._masks.values():
            if (i := cut.unit_index.get(u)) is not None:
                mask[i] = False

    def units_mask(self, cut) -> np.ndarray:
        key = id(cut)
        if key not in self._masks:
            self._masks[key] = (cut, np.fromiter((u in self.units for u in cut.unit_channels),
                                                 bool, len(cut.unit_channels)))  # fmt: skip
        return self._masks[key][1]


class _Without:
    """`base` minus one member, for membership tests, without copying a set of thousands."""

    def __init__(self, base: _Kept, gone: str) -> None:
        self.base, self.gone = base, gone

    def __contains__(self, x: object) -> bool:
        return x != self.gone and x in self.base

    def units_mask(self, cut) -> np.ndarray:
        mask = self.base.units_mask(cut)
        if (i := cut.unit_index.get(self.gone)) is not None and mask[i]:
            mask = mask.copy()
            mask[i] = False
        return mask


def select(
    sc: Scores,
    stats: Stats,
    refit: Callable[[set[str], list[str]], dict[str, dict[str, Fit]]],
    kept: set[str],
    *,
    fold: bool,
    out_var: float,
    coupling: dict[str, np.ndarray] | None = None,
    count: int | None = None,
    budget: float | None = None,
    allowed: Callable[[str, list[str]], bool] = lambda u, chosen: True,
    trace: list[float] | None = None,
    target: Values = Values.ORIGINAL,
    leaning: dict[str, dict[str, np.ndarray]] | None = None,
    flops: tuple[Mapping[str, float], float, bool] | None = None,
) -> tuple[list[str], dict[str, dict[str, Fit]], float]:
    """Greedy removal in the second-order model, one unit at a time: the cost of removing j
    after the set R is its own risk, plus the cross terms 2 sum_i K_ij E[d_i d_j] with the
    units of R in the same cut (residuals of units folded onto the same neighbours add up
    coherently), plus what folds of R lose when j stops being their predictor. Folds whose
    predictor goes are refitted. K is the curvature coupling (diagonal: kappa; off-diagonal
    from scmopt.analysis.curvature.coupling; None: no cross terms).

    Stops after `count` units or when the summed cost would exceed `budget`. `flops` = (FLOPs
    each unit's removal saves, FLOPs to save, strict): ranks by risk per FLOP saved and stops
    once the savings reach the goal (units that save nothing are never taken); strict: only
    units that fit in what is left to save, else the one that overshoots least. Returns the
    units, their fits onto the units that stay kept, and the predicted risk increase."""
    kept = _Kept(set(kept))
    cur: dict[str, dict[str, Fit]] = {}
    live = set(sc.fits)
    saves, goal, strict = flops if flops is not None else ({}, None, False)
    if flops is not None:
        live = {u for u in live if saves.get(u, 0.0) > 0}
    saved = 0.0
    chosen: list[str] = []
    order: dict[str, int] = {}  # unit -> its place in `chosen`
    total = 0.0

    def per(u: str, c: float) -> float:
        """The greedy's key: risk, or risk per FLOP saved."""
        return c / saves[u] if flops is not None else c

    users_of: dict[str, set[str]] = {}  # who folds onto whom under the current fits

    def set_fits(fits: dict[str, dict[str, Fit]]) -> None:
        for u, at in fits.items():
            for k in {k for f in cur.get(u, {}).values() for k in f.pred}:
                users_of[k].discard(u)
            cur[u] = at
            for k in {k for f in at.values() for k in f.pred}:
                users_of.setdefault(k, set()).add(u)

    set_fits({u: dict(at) for u, at in sc.fits.items()})
    at_cut: dict[str, list[str]] = {}
    for u in sorted(cur):
        for t in cur[u]:
            at_cut.setdefault(t, []).append(u)
    chosen_at: dict[str, list[str]] = {t: [] for t in at_cut}

    leaned: dict[str, tuple[dict[str, int], np.ndarray]] = {}

    def block(t: str, units: list[str], fits: dict[str, dict[str, Fit]] | None = None) -> Block:
        src = cur if fits is None else fits
        return Block.of([src[u][t] for u in units], fold, units)

    def krect(t: str, a: Block, b: Block) -> np.ndarray:
        """K between the channels of the units of blocks `a` and `b` at cut t."""
        lean = (leaning or {}).get(t, {})
        if not lean:
            if coupling is None:
                kap = sc.kappa[t]
                return np.where(a.ch[:, None] == b.ch[None, :], kap[a.ch][:, None], 0.0)
            return coupling[t][np.ix_(a.ch, b.ch)]
        pos, k = leaned_k(t)
        return k[np.ix_([pos[u] for u in a.units], [pos[u] for u in b.units])]

    def leaned_k(t: str) -> tuple[dict[str, int], np.ndarray]:
        """e_u^T K e_v for every pair of units at t (e_u: u's channel plus the plan's folds
        leaning on it), made once per call."""
        if t not in leaned:
            lean = leaning[t]
            full = np.diag(sc.kappa[t]) if coupling is None else coupling[t]
            e = np.zeros((len(full), len(at_cut[t])))
            for j, u in enumerate(at_cut[t]):
                e[cur[u][t].channels[0], j] = 1.0
                if u in lean:
                    e[:, j] += lean[u]
            leaned[t] = ({u: j for j, u in enumerate(at_cut[t])}, e.T @ np.nan_to_num(full) @ e)
        return leaned[t]

    def scale(t: str) -> float:
        return stats.cuts[t].positions / out_var

    sums: dict[str, ChosenSums] = {}  # per cut: the chosen units' cross sums (ChosenSums)

    def row_keys(t: str, b: Block) -> np.ndarray:
        if (leaning or {}).get(t):
            pos = leaned_k(t)[0]
            return np.array([pos[u] for u in b.units], dtype=int)
        return b.ch

    def sums_at(t: str) -> ChosenSums:
        if t not in sums:
            c = stats.cuts[t].channels
            if (leaning or {}).get(t):
                pos, k = leaned_k(t)
                keys = np.zeros(len(pos), dtype=int)
                for u, i in pos.items():
                    keys[i] = cur[u][t].channels[0]

                def kcol(u: str, ch: int, k=k, pos=pos) -> np.ndarray:
                    return k[:, pos[u]]
            elif coupling is None:
                keys = np.arange(c)

                def kcol(u: str, ch: int, kap=sc.kappa[t], c=c) -> np.ndarray:
                    e = np.zeros(c)
                    e[ch] = kap[ch]
                    return e
            else:
                keys = np.arange(c)

                def kcol(u: str, ch: int, k=coupling[t]) -> np.ndarray:
                    return k[:, ch]

            sums[t] = ChosenSums(stats.cuts[t], fold, target, kcol, keys)
        return sums[t]

    def with_chosen(t: str, rows: Block) -> np.ndarray:
        """sum_j K[r, j] E[d_r d_j] over the units chosen at t, for each fit r of `rows`."""
        if not chosen_at[t]:
            return np.zeros(len(rows.ch))
        return sums_at(t).rows(rows, row_keys(t, rows))

    def kdiag(t: str, b: Block) -> np.ndarray:
        """K_uu of each unit of `b` at cut t (the diagonal of krect(t, b, b), not the rest)."""
        if (leaning or {}).get(t):
            pos, k = leaned_k(t)
            idx = [pos[u] for u in b.units]
            return k[idx, idx]
        return sc.kappa[t][b.ch] if coupling is None else coupling[t][b.ch, b.ch]

    def own(t: str, u: str) -> float:
        """K_uu E[d_u^2] of u's current fit at t (unscaled)."""
        d = residual_var(stats.cuts[t], [cur[u][t]], fold, target)[0]
        return float(kdiag(t, block(t, [u]))[0] * d)

    base_joint = {t: 0.0 for t in stats.cuts}
    # ordering terms: per cut, each live unit's own risk + 2 x its cross terms with the chosen
    terms: dict[str, dict[str, float]] = {}
    for t, members in at_cut.items():
        us = [u for u in members if u in live]
        if us:
            d = residual_var(stats.cuts[t], [cur[u][t] for u in us], fold, target)
            k = kdiag(t, block(t, us))
            terms[t] = {u: scale(t) * float(k[i] * d[i]) for i, u in enumerate(us)}
        else:
            terms[t] = {}
    base = {u: 0.0 for u in live}
    for t in stats.cuts:  # summed in cut order
        for u, v in terms.get(t, {}).items():
            base[u] += v
    dirty: set[str] = set()  # units whose base moved since the scan order last saw them

    def add_cross(t: str, rows: Block, cols: Block, sign: float) -> None:
        """terms[t][c] += sign * 2 sum_r K_rc E[d_r d_c] for the rows' fits."""
        if not rows.units or not cols.units:
            return
        d = residual_cross(stats.cuts[t], rows, cols, fold, target)
        inc = sign * 2.0 * scale(t) * np.sum(krect(t, rows, cols) * d, axis=0)
        for c, v in zip(cols.units, inc.tolist(), strict=True):
            terms[t][c] += v
            base[c] += v
        dirty.update(cols.units)

    def refresh(t: str, u: str) -> None:
        """u's term at t made again from its current fit (after a refit)."""
        me = block(t, [u])
        v = own(t, u) + 2.0 * float(with_chosen(t, me)[0])  # K and E[d d] are symmetric
        v *= scale(t)
        base[u] += v - terms[t][u]
        terms[t][u] = v
        dirty.add(u)

    def drop(u: str) -> None:
        live.discard(u)
        base.pop(u, None)
        queue.discard(u)
        for t in cur[u]:
            terms[t].pop(u, None)

    # deltas with refits, exact until a step touches a cut of the unit or of its users
    known: dict[str, tuple[float, dict, dict]] = {}

    def delta(u: str) -> tuple[float, dict, dict]:
        """Exact model increase of removing u now (users of u refitted without it)."""
        users = sorted((i for i in users_of.get(u, ()) if i in order), key=order.get)
        if not users:  # the ordering term is the exact increase: nothing to refit
            return base[u], {}, {t: base_joint[t] + terms[t][u] for t in cur[u]}
        if u not in known:
            new = refit(_Without(kept, u), users)
            after = {t: base_joint[t] + change(t, u, new) for t in cur[u]}
            known[u] = (sum(after[t] - base_joint[t] for t in after), new, after)
        return known[u]

    def change(t: str, u: str, new: dict[str, dict[str, Fit]]) -> float:
        """joint(chosen + [u]) with `new` fits of u's users - joint(chosen) with their old
        ones, at cut t, from the rows of u and of its users against the chosen units' block
        (their old columns taken out again, the new ones put in)."""
        cs = stats.cuts[t]
        moved = [a for a in chosen_at[t] if a in new]
        m = len(moved)
        # rows: u, its users' new fits, their old ones; one gather per column block
        rows = Block.of([cur[u][t]] + [new[a][t] for a in moved] + [cur[a][t] for a in moved],
                        fold, [u, *moved, *moved])  # fmt: skip
        mn, mo = slice(1, 1 + m), slice(1 + m, 1 + 2 * m)
        total = own(t, u)
        if chosen_at[t]:
            r1 = with_chosen(t, rows)
            total += 2.0 * (r1[0] + r1[mn].sum() - r1[mo].sum())
        if m:
            cols = Block.of([new[a][t] for a in moved] + [cur[a][t] for a in moved], fold,
                            [*moved, *moved])  # fmt: skip
            k2 = krect(t, rows, cols) * residual_cross(cs, rows, cols, fold, target)
            cn, co = slice(0, m), slice(m, 2 * m)
            total += -2.0 * k2[mn, co].sum() + k2[mn, cn].sum() + k2[mo, co].sum()
            total += 2.0 * (k2[0, cn].sum() - k2[0, co].sum())
        return scale(t) * total

    queue = LazyOrder({u: per(u, base[u]) for u in live})
    while live and (count is None or len(chosen) < count) and (goal is None or saved < goal):
        best = None
        for u in dirty & live:
            queue.update(u, per(u, base[u]))
        dirty.clear()
        if strict:  # the last round: what still fits in the goal, else the least overshoot
            least = min(max(saves[u], goal - saved) for u in live)
            pool = sorted((per(v, base[v]), v) for v in live if saves[v] <= least)
        scan = (e for e in pool) if strict else queue.scan()  # (key, unit) ascending
        with closing(scan):  # a scan that stopped early puts its entries back
            for key, u in scan:
                if best is not None and key >= best[0]:
                    break
                if not allowed(u, chosen):
                    drop(u)
                    continue
                c, new, after = delta(u)
                if best is None or per(u, c) < best[0]:
                    best = (per(u, c), c, u, new, after)
        if best is None or (budget is not None and total + best[1] > budget):
            break
        _, c, j, new, after = best
        saved += saves.get(j, 0.0)
        order[j] = len(chosen)
        chosen.append(j)
        drop(j)
        kept.discard(j)
        total += c
        if trace is not None:
            trace.append(total)  # cumulative: a prefix of the order is the shorter greedy run
        old = {a: cur[a] for a in new}
        set_fits(new)
        base_joint.update(after)
        stale = sorted(u for u in users_of.get(j, ()) if u in live)
        if stale:
            set_fits(refit(kept, stale))
        # the terms that changed: j's (and refitted users') rows against the live units, and
        # the refitted live units' own terms
        stale_set = set(stale)
        touched = sorted({t for u in (j, *new, *stale) for t in cur[u]})
        for t in touched:  # cached deltas that read these cuts: their users' or their own
            for v in at_cut[t]:
                known.pop(v, None)
            for a in chosen_at[t]:
                for f in cur[a].values():
                    for k in f.pred:
                        known.pop(k, None)
        for t in touched:
            cols = block(t, [u for u in at_cut[t] if u in live and u not in stale_set])
            moved = [a for a in new if t in cur[a]]
            if t in cur[j]:
                chosen_at[t].append(j)
                sums_at(t).add(j, cur[j][t])
                add_cross(t, block(t, [j]), cols, 1.0)
            for a in moved:  # chosen units refitted without j: their sums follow their fits
                sums_at(t).add(a, old[a][t], -1.0)
                sums_at(t).add(a, cur[a][t])
            add_cross(t, block(t, moved), cols, 1.0)
            add_cross(t, block(t, moved, old), cols, -1.0)
            for u in stale:
                if t in cur[u] and u in live:
                    refresh(t, u)
    return chosen, {u: cur[u] for u in chosen}, total
