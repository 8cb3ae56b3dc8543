"""Brute force on the measured IIA: an empirical ceiling for issue 14's IIA goals.

Removes units of one layer one at a time, each step taking the unit whose removal keeps the
*measured* IIA of the calibration trials highest (every remaining unit tried: O(C^2) IIA
evaluations, fine for the zoo's last layers of 64-96 units). No second-order model: if this
greedy cannot get ahead of a method, neither can a better criterion for the same abstraction
class and alignment.

Two settings, each with the fit that is optimal in least squares for its alignment:
- singleton (the companion's protocol): removed units keep the base value in the original
  while about half the kept units carry the source's, so the fit is the least squares of the
  base values on *interchanged* kept values, every kept unit a parent. In closed form from
  plain moments (base b and source s independent, each kept unit swapped with probability p):
  Cov(b_r, x~_k) = (1 - p) C_rk, Cov(x~_k, x~_l) = ((1 - p)^2 + p^2) C_kl (k != l), C_kk;
- cell-aligned: a removed unit joins its one parent's cell and is swapped with it, so its
  error is the plain-data residual at the base or the source: one parent (the kept unit of
  largest squared correlation), fitted on plain data.
Values are [N, C, 1] (dense layers: the companion peer's Layer with a linear readout).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from peers import companion as C

Fit = Callable[..., tuple[np.ndarray, np.ndarray]]  # (a, removed, kept, p, moments)


def _moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = a[:, :, 0]
    mu = x.mean(axis=0)
    xc = x - mu
    return mu, xc.T @ xc / len(x)


def interchange_fit(a: np.ndarray, removed: np.ndarray, kept: np.ndarray, p: float,
                    moments: tuple[np.ndarray, np.ndarray] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(coef [R, K], offset [R, 1]): least squares of the removed units' base values on the
    interchanged kept values (module docstring), ridge 1e-6 of the mean variance. `moments`:
    _moments(a), when the caller fits many sets on the same values."""
    mu, cov = moments or _moments(a)
    ckk = cov[np.ix_(kept, kept)] * ((1 - p) ** 2 + p**2)
    np.fill_diagonal(ckk, np.diag(cov)[kept])
    ckk += 1e-6 * max(float(np.diag(ckk).mean()), 1e-12) * np.eye(len(kept))
    coef = np.linalg.solve(ckk, (1 - p) * cov[np.ix_(kept, removed)]).T
    return coef, (mu[removed] - coef @ mu[kept])[:, None]


def one_parent_fit(a: np.ndarray, removed: np.ndarray, kept: np.ndarray, p: float,
                   moments: tuple[np.ndarray, np.ndarray] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(coef [R, K] with at most one non-zero per row, offset [R, 1]): each removed unit on the
    kept unit of largest squared correlation, plain least squares (p is not used: under the
    cell alignment a unit moves with its parent). A unit no kept unit explains is a constant."""
    mu, cov = moments or _moments(a)
    var = np.diag(cov)
    v = var[kept]
    c = cov[np.ix_(removed, kept)]
    rho2 = np.where(v[None] > 1e-12, c * c / np.maximum(v[None], 1e-12), 0.0)
    rho2 /= np.maximum(var[removed], 1e-12)[:, None]
    coef = np.zeros_like(c)
    best = rho2.argmax(axis=1)
    rows = np.flatnonzero(rho2[np.arange(len(removed)), best] > 1e-9)
    coef[rows, best[rows]] = c[rows, best[rows]] / v[best[rows]]
    return coef, (mu[removed] - coef @ mu[kept])[:, None]


def abstraction(a: np.ndarray, removed: list[int], fit: Fit, p: float, name: str,
                moments: tuple[np.ndarray, np.ndarray] | None = None) -> C.Abstraction:  # fmt: skip
    rem = np.array(sorted(removed), dtype=int)
    kept = np.setdiff1d(np.arange(a.shape[1]), rem)
    coef, off = fit(a, rem, kept, p, moments)
    return C.Abstraction(name, kept, rem, coef, off)


def greedy(
    layer: C.Layer, keep: int, cells: bool, *, trials: int = 3000, p: float = 0.5,
    seed: int = 0, name: str | None = None,
) -> tuple[C.Abstraction, list[float]]:  # fmt: skip
    """Remove C - keep units of `layer`, each step the one that leaves the highest measured IIA
    (cell-aligned with `cells`) on `trials` calibration trials of `seed` (the same trials every
    step: common random numbers; ties to the lower channel). Returns the abstraction (fitted
    on the calibration split) and the calibration IIA after each step."""
    fit = one_parent_fit if cells else interchange_fit
    label = name or f"measured greedy ({'cell-aligned' if cells else 'singleton'})"
    calib = C.Layer(layer.calib, layer.calib, layer.y_calib, layer.out_calib, layer.out_calib)
    moments = _moments(layer.calib)
    removed: list[int] = []
    trace: list[float] = []
    for _ in range(layer.channels - keep):
        best: tuple[float, int] | None = None
        for u in range(layer.channels):
            if u in removed:
                continue
            ab = abstraction(layer.calib, [*removed, u], fit, p, label, moments)
            score = float(C.hits(calib, ab, seed, trials, p, cells=cells).mean())
            if best is None or score > best[0]:
                best = (score, u)
        removed.append(best[1])
        trace.append(best[0])
    return abstraction(layer.calib, removed, fit, p, label, moments), trace
