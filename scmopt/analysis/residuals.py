"""Residual covariances of fits at one cut, and the greedy's maintained sums of them.

A fit replaces a removed unit a by r = offset + sum_w c_w x_w of kept units; its residual is
d = a - r. Under the interventional family (analysis.stats) the covariances of residuals
follow from the cut's moments alone: target-target pairs from plain moments, target-predictor
pairs from the one-swapped ones, predictor pairs from the two-swapped (residual_cross).
ChosenSums keeps, per cut, the sums of these terms against the units the greedy
(analysis.selection) has chosen, so a candidate's cross terms cost O(predictors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scmopt.analysis.fits import Fit
from scmopt.analysis.stats import CutStats, Values


@dataclass
class Block:
    """Fits at one cut laid out for residual_cross: target channels, which fits fold, their
    predictor channels and minus their coefficients (zero-padded to the widest fold). Made
    once per set of fits: the greedy reuses the chosen units' block across candidates."""

    units: list[str]
    ch: np.ndarray
    folded: np.ndarray
    idx: np.ndarray
    coef: np.ndarray

    @classmethod
    def of(cls, fits: list[Fit], fold: bool, units: list[str] | None = None) -> Block:
        ch = np.array([f.channels[0] for f in fits], dtype=int)
        folded = [r for r, f in enumerate(fits) if fold and f.pred and f.resid < f.var]
        width = max((len(fits[r].pred_idx) for r in folded), default=0)
        idx = np.zeros((len(folded), width), dtype=int)
        coef = np.zeros((len(folded), width))
        for i, r in enumerate(folded):
            k = len(fits[r].pred_idx)
            idx[i, :k], coef[i, :k] = fits[r].pred_idx, -fits[r].coef
        return cls(units or [], ch, np.array(folded, dtype=int), idx, coef)


def residual_cross(cs: CutStats, rows: list[Fit] | Block, cols: list[Fit] | Block, fold: bool,
                   target: Values = Values.ORIGINAL) -> np.ndarray:  # fmt: skip
    """E_I[d_a d_b] (within-position, pooled) for the residuals d = a - r of fits `rows` x
    `cols` at one cut. Removed units are never swapped, their predictors are: target-target
    pairs use plain moments, target-predictor pairs the one-swapped ones, predictor pairs the
    two-swapped. Folds have a handful of predictors: only the entries they touch are
    gathered (the search calls this for every candidate on cuts with hundreds of channels)."""
    a = rows if isinstance(rows, Block) else Block.of(rows, fold)
    b = cols if isinstance(cols, Block) else Block.of(cols, fold)
    out = cs.covariance(0, target, target)[np.ix_(a.ch, b.ch)].copy()
    if not len(a.folded) and not len(b.folded):
        return out
    c1 = cs.covariance(1, target, Values.PLAN)
    if len(b.folded):  # target a x fold b
        out[:, b.folded] += np.einsum("mkw,kw->mk", c1[a.ch[:, None, None], b.idx[None]], b.coef)
    if len(a.folded):
        out[a.folded, :] += np.einsum("mkw,kw->km", c1[b.ch[:, None, None], a.idx[None]],
                                      a.coef)  # fmt: skip
    if len(a.folded) and len(b.folded):
        c2 = cs.covariance(2)[a.idx[:, :, None, None], b.idx[None, None]]
        out[np.ix_(a.folded, b.folded)] += np.einsum("kw,kwlv,lv->kl", a.coef, c2, b.coef)
    return out


def residual_cov(
    cs: CutStats, fits: list[Fit], fold: bool, target: Values = Values.ORIGINAL
) -> np.ndarray:
    """E_I[d_u d_v] for the residuals of `fits` at one cut (residual_cross of fits x fits)."""
    return residual_cross(cs, fits, fits, fold, target)


def residual_var(cs: CutStats, fits: list[Fit], fold: bool,
                 target: Values = Values.ORIGINAL) -> np.ndarray:  # fmt: skip
    """The diagonal of residual_cov, without the rest of it."""
    blk = Block.of(fits, fold)
    out = cs.covariance(0, target, target)[blk.ch, blk.ch].copy()
    if len(blk.folded):
        c1, c2 = cs.covariance(1, target, Values.PLAN), cs.covariance(2)
        idx, coef = blk.idx, blk.coef
        cross = np.einsum("kw,kw->k", c1[blk.ch[blk.folded][:, None], idx], coef)
        inner = np.einsum("kw,kwv,kv->k", coef, c2[idx[:, :, None], idx[:, None, :]], coef)
        out[blk.folded] += 2.0 * cross + inner
    return out


class ChosenSums:
    """Per cut, sum_j K[key, j] E[x d_j] over the chosen units j and their current fits, for
    every row key and channel x, kept up to date as units are chosen and refitted: the cross
    term of any fit f (target channel a, predictors p, coefficients c) with all the chosen,
    sum_j K_fj E[d_f d_j] = t[key] + sum_w c_w P[key, p_w], then costs O(predictors) instead
    of a gather over every chosen unit (which made the greedy quadratic in the units chosen).

    With residuals d_j = x_b + sum_v c_jv x_q (residual_cross's terms): t[key] = sum_j K[key, j]
    (C0[a, b] + sum_v c_jv C1[a, q_v]) for the key's own channel a (a removed target, never
    swapped), P[key, x] = sum_j K[key, j] (C1[b, x] + sum_v C2[x, q_v] c_jv) for x as a
    predictor. Keys are channels, or units when K is the leaned unit matrix."""

    def __init__(self, cs: CutStats, fold: bool, target: Values,
                 kcol: Callable[[str, int], np.ndarray], keys: np.ndarray) -> None:  # fmt: skip
        self.c0 = cs.covariance(0, target, target)
        self.c1 = cs.covariance(1, target, Values.PLAN)
        self.c2 = cs.covariance(2)
        self.fold = fold
        self.kcol = kcol  # (unit, its channel) -> K[:, that unit's key] over every row key
        self.chan = keys  # the channel of each row key
        self.t = np.zeros(len(keys))
        self.P = np.zeros((len(keys), self.c0.shape[0]))
        # wide coupled cuts: rank-1 updates of P wait here and go in as one product (BUFFER
        # at a time); rows() adds what is pending. Each np.outer pass over a [keys, C] P cost
        # 7% of EfficientNet-Lite1's first two rounds
        self.buffered = self.P.size >= self.WIDE
        self._k: list[np.ndarray] = []
        self._p: list[np.ndarray] = []

    WIDE = 2**18  # entries of P from which updates are buffered (the zoo's cuts stay below)
    BUFFER = 32

    def _flush(self) -> None:
        if self._k:
            self.P += np.asarray(self._k).T @ np.asarray(self._p)
            self._k, self._p = [], []

    def add(self, unit: str, f: Fit, sign: float = 1.0) -> None:
        blk = Block.of([f], self.fold)
        b = int(blk.ch[0])
        tvec = self.c0[:, b].copy()
        pvec = self.c1[b, :].copy()
        if len(blk.folded):
            q, c = blk.idx[0], blk.coef[0]
            tvec += self.c1[:, q] @ c
            pvec += self.c2[:, q] @ c
        k = sign * self.kcol(unit, b)
        nz = np.flatnonzero(k)
        if len(nz) == len(k):  # a coupled K: every row (no gather and scatter)
            self.t += k * tvec[self.chan]
            if self.buffered:
                self._k.append(k)
                self._p.append(pvec)
                if len(self._k) >= self.BUFFER:
                    self._flush()
            else:
                self.P += np.outer(k, pvec)
        else:  # a diagonal K: one row
            self.t[nz] += k[nz] * tvec[self.chan[nz]]
            self.P[nz] += np.outer(k[nz], pvec)

    def rows(self, blk: Block, keys: np.ndarray) -> np.ndarray:
        """sum_j K[row, j] E[d_row d_j] for each fit of `blk` (row keys `keys`)."""
        out = self.t[keys].copy()
        if len(blk.folded):
            kf = keys[blk.folded]
            out[blk.folded] += np.sum(self.P[kf[:, None], blk.idx] * blk.coef, axis=1)
            if self._k:  # pending updates: sum_m k_m[row] (p_m[predictors] . coef)
                g = np.sum(np.asarray(self._p)[:, blk.idx] * blk.coef[None], axis=2)
                out[blk.folded] += np.sum(np.asarray(self._k)[:, kf] * g, axis=0)
        return out
