"""The companion paper's pruning methods and trial protocol (AsiaeeLab/certified-interventional-
fidelity, `code/pruning.py`, `code/iia.py`), written from issue 14's description; pure numpy,
the network's remainder is any callable (a linear readout here, an onnxruntime sub-model in
tools/bench_companion.py).

Values of the studied layer are [N, C, P]: C units (channels), P values per unit (1 for a
dense layer, tokens for a transformer FFN cut); an intervention moves a unit's P values together.

Trial protocol (`hits`): base i and source j != i drawn i.i.d. uniformly from the test split;
each kept unit takes the source's value with probability p (0.5). In the original network the
removed units keep the base value; in the abstraction they are replaced by the method's
constant / affine map of the intervened kept values. A trial hits when the two outputs' top-1
classes agree; IIA = hits / trials, reported as mean +- std (ddof 1) over seeds (10 x 10k).
*Cell-aligned* (cells=True): each folded removed unit belongs to the cell of the kept unit
carrying the largest |coefficient| of its fit (constants belong to no cell); swapping a kept
unit swaps its whole cell in the original, while the abstraction swaps only the kept unit (the
removed ones follow their fits). *Fidelity*: top-1 agreement on plain test inputs.

Methods (`keep` units stay, the R = C - keep others go; fits on the calibration split):
- vbp: remove the lowest-variance units, replace by the mean;
- random: a seeded permutation, mean;
- cip-const: with softmax p_n and readout W, g_n = (p_n - onehot(y_n)) W, h_n = p_n . W^2 -
  (p_n . W)^2 per unit; Q_j(c) = sum_n [g_nj (c - a_nj) + h_nj (c - a_nj)^2 / 2],
  c*_j = (sum h a - sum g) / sum h; remove the smallest Q_j(c*_j), replace by c*_j;
- cip-affine: cip-const's removed set, each unit fitted to its 8 kept units of largest
  |correlation| by h-weighted ridge (1e-4) least squares on centred calibration activations.
With a non-linear remainder W is replaced by its finite-difference Jacobian at each sample
(`curvature`): the Gauss-Newton form of the same g and h, diagonal over positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# (values [n, C, P], base sample of each row [n]) -> logits [n, K]
Remainder = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Linear:
    """A linear readout of a dense layer (P = 1): logits = a W^T + b."""

    w: np.ndarray  # [K, C]
    b: np.ndarray  # [K]

    def __call__(self, a: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        return a[:, :, 0] @ self.w.T + self.b


@dataclass(frozen=True)
class Layer:
    """The studied layer of one network: its values on both splits and the rest of the network
    (called with the base samples' rows, for whatever else the remainder reads)."""

    calib: np.ndarray  # [N, C, P]
    test: np.ndarray  # [M, C, P]
    y_calib: np.ndarray  # [N] labels
    out_calib: Remainder
    out_test: Remainder

    @property
    def channels(self) -> int:
        return self.calib.shape[1]


@dataclass(frozen=True)
class Abstraction:
    """Kept units unchanged; removed unit r = coef[r] . (kept values) + offset[r] (per position)."""

    name: str
    kept: np.ndarray  # [K] channel indices
    removed: np.ndarray  # [R] channel indices
    coef: np.ndarray  # [R, K]
    offset: np.ndarray  # [R, P] or [R, 1]

    def replace(self, kept_values: np.ndarray) -> np.ndarray:
        """[n, K, P] kept values -> [n, R, P] values of the removed units."""
        return np.einsum("rk,nkp->nrp", self.coef, kept_values) + self.offset[None]

    def apply(self, a: np.ndarray) -> np.ndarray:
        """`a` [n, C, P] with the removed units replaced from its kept units."""
        out = a.copy()
        out[:, self.removed] = self.replace(a[:, self.kept])
        return out

    @property
    def cells(self) -> np.ndarray:
        """[R]: position in `kept` of the kept unit whose cell each removed unit joins (the
        largest |coefficient| of its fit), -1 for a constant."""
        mag = np.abs(self.coef)
        return np.where(mag.max(axis=1, initial=0.0) > 0, mag.argmax(axis=1), -1)

    def cell_map(self, ids: list[str] | None = None) -> dict[str, list[str]]:
        """kept unit -> removed units of its cell (unit ids, or channel indices as strings)."""
        name = (lambda c: ids[c]) if ids else str  # noqa: E731
        out: dict[str, list[str]] = {}
        for r, k in zip(self.removed, self.cells, strict=True):
            if k >= 0:
                out.setdefault(name(int(self.kept[k])), []).append(name(int(r)))
        return out


# curvature proxies -----------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _gh(prob: np.ndarray, onehot: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """g = (p - y) . J, h = p . J^2 - (p . J)^2 for Jacobian columns `col` [N, K, ...]."""
    ex = (slice(None), slice(None)) + (None,) * (col.ndim - 2)
    g = ((prob - onehot)[ex] * col).sum(axis=1)
    pj = (prob[ex] * col).sum(axis=1)
    return g, (prob[ex] * col * col).sum(axis=1) - pj * pj


def curvature(
    layer: Layer, eps: float = 1e-2, chunk: int = 16
) -> tuple[np.ndarray, np.ndarray, str]:
    """(g, h, how) [N, C, P] on the calibration split. A Linear readout gives the companion's
    closed form; otherwise W is each sample's Jacobian of the remainder, by central
    differences of eps x the unit's std, only at positions that reach the output (probed
    first) and diagonal over positions."""
    a, n = layer.calib, len(layer.calib)
    base = np.arange(n)
    logits = layer.out_calib(a, base)
    prob = _softmax(logits.astype(np.float64))
    onehot = np.eye(prob.shape[1])[layer.y_calib]
    if isinstance(layer.out_calib, Linear):
        w = layer.out_calib.w.astype(np.float64)
        g, h = _gh(prob, onehot, np.broadcast_to(w[None], (n, *w.shape)))
        return g[:, :, None], h[:, :, None], "closed form (linear readout)"
    _, c, p = a.shape
    step = eps * (a.std(axis=(0, 2)) + 1e-12)  # [C]
    rng = np.random.default_rng(0)
    active = []
    for q in range(p):  # does position q reach the output at all?
        d = np.zeros_like(a)
        d[:, :, q] = step * rng.choice([-1.0, 1.0], size=c)
        if np.abs(layer.out_calib(a + d, base) - logits).max() > 1e-6 * (1 + np.abs(logits).max()):
            active.append(q)
    g, h = np.zeros((n, c, p)), np.zeros((n, c, p))
    cols = [(j, q) for q in active for j in range(c)]
    for s in range(0, len(cols), chunk):
        part = cols[s : s + chunk]
        batch = np.concatenate([a] * (2 * len(part)))
        for t, (j, q) in enumerate(part):
            batch[(2 * t) * n : (2 * t + 1) * n, j, q] += step[j]
            batch[(2 * t + 1) * n : (2 * t + 2) * n, j, q] -= step[j]
        out = layer.out_calib(batch, np.tile(base, 2 * len(part))).astype(np.float64)
        out = out.reshape(len(part), 2, n, -1)
        for t, (j, q) in enumerate(part):
            col = (out[t, 0] - out[t, 1]) / (2 * step[j])
            g[:, j, q], h[:, j, q] = _gh(prob, onehot, col)
    how = f"finite-difference Jacobian of the remainder (positions {active} of {p} reach it)"
    return g, h, how


# methods -----------------------------------------------------------------------------------
def _split(c: int, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    removed = np.sort(removed)
    return np.setdiff1d(np.arange(c), removed), removed


def constant(name: str, removed: np.ndarray, values: np.ndarray, c: int) -> Abstraction:
    """Removed units replaced by `values` [C, P] (their rows)."""
    kept, removed = _split(c, removed)
    return Abstraction(name, kept, removed, np.zeros((len(removed), len(kept))), values[removed])


def vbp(layer: Layer, keep: int) -> Abstraction:
    a = layer.calib
    order = np.argsort(a.var(axis=0).sum(axis=1), kind="stable")
    return constant("vbp", order[: layer.channels - keep], a.mean(axis=0), layer.channels)


def random(layer: Layer, keep: int, seed: int = 0) -> Abstraction:
    perm = np.random.default_rng(seed).permutation(layer.channels)
    return constant("random", perm[: layer.channels - keep], layer.calib.mean(axis=0),
                    layer.channels)  # fmt: skip


def cip_scores(a: np.ndarray, g: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q_j(c*_j) summed over positions [C], c* [C, P]); where sum h ~ 0: the mean."""
    hs, gs, ha = h.sum(0), g.sum(0), (h * a).sum(0)
    good = hs > 1e-10
    c_star = np.where(good, (ha - gs) / np.where(good, hs, 1.0), a.mean(0))
    q = (g * (c_star - a) + h * (c_star - a) ** 2 / 2).sum(axis=0)
    return q.sum(axis=1), c_star


def cip_const(layer: Layer, keep: int, g: np.ndarray, h: np.ndarray) -> Abstraction:
    q, c_star = cip_scores(layer.calib, g, h)
    order = np.argsort(q, kind="stable")
    return constant("cip-const", order[: layer.channels - keep], c_star, layer.channels)


def weighted_ridge(x: np.ndarray, t: np.ndarray, w: np.ndarray, ridge: float = 1e-4):
    """(coef [k], beta) of w-weighted ridge least squares t ~ x coef + beta, features centred
    by their weighted means."""
    w = np.clip(w, 1e-8, None)
    xm, tm = (w[:, None] * x).sum(0) / w.sum(), (w * t).sum() / w.sum()
    sw = np.sqrt(w)
    xw, tw = (x - xm) * sw[:, None], (t - tm) * sw
    coef = np.linalg.solve(xw.T @ xw + ridge * np.eye(x.shape[1]), xw.T @ tw)
    return coef, tm - xm @ coef


def top_correlated(a: np.ndarray, j: int, kept: np.ndarray, r: int) -> np.ndarray:
    """Positions in `kept` of the r kept units of largest |correlation| with unit j (values
    pooled over samples and positions)."""
    t = a[:, j].ravel() - a[:, j].mean()
    x = a[:, kept].transpose(0, 2, 1).reshape(-1, len(kept))
    x = x - x.mean(0)
    corr = (x * t[:, None]).mean(0) / ((x.std(0) + 1e-8) * (t.std() + 1e-8))
    return np.argsort(-np.abs(corr), kind="stable")[:r]


def affine(
    name: str,
    base: Abstraction,
    fit_on: np.ndarray,
    weights: np.ndarray,
    parents: int = 8,
    ridge: float = 1e-4,
    select_on: np.ndarray | None = None,
    target: np.ndarray | None = None,
) -> Abstraction:
    """`base`'s removed set, each removed unit refitted to its `parents` kept units of largest
    |correlation| (on `select_on`, default `fit_on`) by `weights`-weighted ridge least squares
    of `target` (default `fit_on` itself) [n, C, P] on `fit_on`'s kept values; one
    coefficient per parent, one offset per unit (samples pooled over positions)."""
    target = fit_on if target is None else target
    select_on = fit_on if select_on is None else select_on
    kept, removed = base.kept, base.removed
    coef = np.zeros((len(removed), len(kept)))
    offset = np.zeros((len(removed), 1))
    for r, j in enumerate(removed):
        top = top_correlated(select_on, int(j), kept, parents)
        x = fit_on[:, kept[top]].transpose(0, 2, 1).reshape(-1, len(top))
        c, b = weighted_ridge(x, target[:, j].ravel(), weights[:, j].ravel(), ridge)
        coef[r, top], offset[r] = c, b
    return Abstraction(name, kept, removed, coef, offset)


def cip_affine(layer: Layer, keep: int, g: np.ndarray, h: np.ndarray, **kw) -> Abstraction:
    return affine("cip-affine", cip_const(layer, keep, g, h), layer.calib, h, **kw)


# the trial protocol ----------------------------------------------------------------------------
def draws(m: int, kept: int, trials: int, seed: int, p: float = 0.5):
    """(i, j, mask [trials, kept]): bases and sources i.i.d. uniform over m samples, j != i,
    each kept unit swapped with probability p."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, m, trials), rng.integers(0, m, trials)
    while (same := i == j).any():
        j[same] = rng.integers(0, m, int(same.sum()))
    return i, j, rng.random((trials, kept)) < p


def intervene(
    a: np.ndarray, abst: Abstraction, i, j, mask, cells: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(original's, abstraction's) values of the layer [n, C, P] for trials (i, j, mask)."""
    base, src = a[i], a[j]
    orig = base.copy()
    orig[:, abst.kept] = np.where(mask[:, :, None], src[:, abst.kept], base[:, abst.kept])
    if cells:
        cell = abst.cells
        r = abst.removed[cell >= 0]
        sw = mask[:, cell[cell >= 0]][:, :, None]
        orig[:, r] = np.where(sw, src[:, r], base[:, r])
    return orig, abst.apply(orig)


def hits(
    layer: Layer,
    abst: Abstraction,
    seed: int,
    trials: int = 10_000,
    p: float = 0.5,
    cells: bool = False,
    chunk: int = 2_000,
) -> np.ndarray:
    """[trials] bool: the trials (one seed) on which original and abstraction agree."""
    i, j, mask = draws(len(layer.test), len(abst.kept), trials, seed, p)
    out = np.zeros(trials, dtype=bool)
    for s in range(0, trials, chunk):
        sl = slice(s, s + chunk)
        orig, ab = intervene(layer.test, abst, i[sl], j[sl], mask[sl], cells)
        lo, la = layer.out_test(orig, i[sl]), layer.out_test(ab, i[sl])
        out[sl] = lo.argmax(axis=1) == la.argmax(axis=1)
    return out


def iia(layer: Layer, abst: Abstraction, seeds: int = 10, trials: int = 10_000,
        p: float = 0.5, cells: bool = False) -> tuple[float, float, list[float]]:  # fmt: skip
    """(mean, std over seeds, per seed) of the IIA with seeds 0 .. seeds-1."""
    per = [float(hits(layer, abst, s, trials, p, cells).mean()) for s in range(seeds)]
    return float(np.mean(per)), float(np.std(per, ddof=1)) if seeds > 1 else 0.0, per


def fidelity(layer: Layer, abst: Abstraction) -> float:
    """Top-1 agreement on the plain test inputs."""
    base = np.arange(len(layer.test))
    lo = layer.out_test(layer.test, base)
    la = layer.out_test(abst.apply(layer.test), base)
    return float(np.mean(lo.argmax(axis=1) == la.argmax(axis=1)))


def explained(layer: Layer, abst: Abstraction, seed: int = 0, trials: int = 10_000,
              p: float = 0.5) -> tuple[float, float] | None:  # fmt: skip
    """Linear readouts only: the share of the removed units' logit variance that the
    replacement explains, 1 - E||W_R (a_R - r_R)||^2 / E||W_R (a_R - mean)||^2, on plain test
    inputs and on the trials of `seed` (the original's a_R: base values)."""
    if not isinstance(layer.out_test, Linear):
        return None
    w = layer.out_test.w[:, abst.removed]
    mean = layer.calib[:, abst.removed].mean(axis=0)[:, 0]

    def share(orig: np.ndarray, ab: np.ndarray) -> float:
        a_r = orig[:, abst.removed, 0]
        err = ((a_r - ab[:, abst.removed, 0]) @ w.T) ** 2
        return float(1 - err.sum() / (((a_r - mean) @ w.T) ** 2).sum())

    i, j, mask = draws(len(layer.test), len(abst.kept), trials, seed, p)
    return share(layer.test, abst.apply(layer.test)), share(*intervene(layer.test, abst, i, j,
                                                                        mask))  # fmt: skip


def shift(layer: Layer, abst: Abstraction) -> float:
    """Largest |mean replacement - mean value| of a removed unit on the calibration split, in
    units of the layer's mean unit std (pooled over positions; dead units have std 0): how far
    a replacement sits from the data."""
    r = abst.replace(layer.calib[:, abst.kept])
    gap = np.abs(r.mean(axis=(0, 2)) - layer.calib[:, abst.removed].mean(axis=(0, 2)))
    return float(gap.max() / (layer.calib.std(axis=(0, 2)).mean() + 1e-12))


def interchange_sample(a: np.ndarray, kept: np.ndarray, n: int, seed: int, p: float = 0.5):
    """n interchanges on the calibration values `a`: (values with the kept units swapped as in
    a trial [n, C, P], the base rows [n]); for fits under the interchange distribution."""
    i, j, mask = draws(len(a), len(kept), n, seed, p)
    x = a[i].copy()
    x[:, kept] = np.where(mask[:, :, None], a[j][:, kept], x[:, kept])
    return x, i
