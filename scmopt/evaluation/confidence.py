"""Anytime-valid lower confidence bounds on a success rate (fidelity, IIA) from i.i.d. trials
scored in [0, 1] (0/1 for top-1; graded for cosine, rel-mse, ...), as the companion paper
certifies the flip rate (issue 14). Both bounds need only that the scores are bounded in [0, 1].

- Hoeffding with a union bound over the sample size: at n trials the radius is
  sqrt(log(1 / delta_n) / (2 n)), delta_n = 6 delta / (pi^2 n^2), so the bound holds at every n
  simultaneously with probability >= 1 - delta.
- Betting (Waudby-Smith & Ramdas 2023): for a candidate mean m the capital
  K_n(m) = prod_i (1 + lambda_i (x_i - m)) is a nonnegative martingale when the true mean is m;
  by Ville's inequality P(sup_n K_n(m) >= 1 / delta) <= delta, so {m : K_n(m) < 1 / delta} is a
  confidence sequence. lambda_i is predictable (it uses x_1..x_{i-1} only): the plug-in
  sqrt(2 log(1 / delta) / (var_{i-1} h_i)), clipped to [0, c / m], with h_i = i log(i + 1)
  (tight early) below HORIZON trials and h_i = n, the planned number of trials, from there
  (tight at n: at 10,000 trials and rate 0.6 the bound is 0.012 below the mean, not 0.039).
  Both are predictable sequences fixed before any outcome is seen (the choice depends on n
  only), so Ville's inequality holds either way.

Both are one-sided lower bounds at level delta. The order of the trials must not depend on
their outcomes (draw them i.i.d. first, then evaluate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bound:
    """A point estimate and its anytime-valid lower bounds at level `delta`."""

    n: int
    point: float
    hoeffding: float
    betting: float
    delta: float

    @property
    def lower(self) -> float:
        """The certified lower bound (betting; chosen before seeing data, not the max)."""
        return self.betting


HORIZON = 500  # from this many trials the bets are tuned to the planned number (docstring)


def hoeffding_lower(x: np.ndarray, delta: float) -> float:
    n = len(x)
    if n == 0:
        return 0.0
    delta_n = 6.0 * delta / (math.pi**2 * n**2)
    return max(0.0, float(np.mean(x)) - math.sqrt(math.log(1.0 / delta_n) / (2.0 * n)))


def betting_lower(x: np.ndarray, delta: float, grid: int = 2001, c: float = 0.75) -> float:
    """inf of the betting confidence sequence at the last trial (see module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return 0.0
    i = np.arange(1, n + 1)
    # predictable running mean and variance (with a prior of 1/2 and 1/4)
    csum = np.concatenate([[0.0], np.cumsum(x)[:-1]])
    mu = (0.5 + csum) / i
    csq = np.concatenate([[0.0], np.cumsum((x - np.concatenate([[0.5], mu[1:]])) ** 2)[:-1]])
    var = (0.25 + csq) / i
    tune = float(n) if n >= HORIZON else i * np.log(i + 1.0)
    lam = np.sqrt(2.0 * math.log(1.0 / delta) / (var * tune))
    ms = np.linspace(0.0, 1.0, grid)[1:]  # m = 0 is never rejected
    lower = 0.0
    # chunks of candidates keep memory at O(n x chunk)
    for start in range(0, len(ms), 256):
        m = ms[start : start + 256]
        lam_m = np.minimum(lam[:, None], c / m[None, :])
        log_k = np.log1p(lam_m * (x[:, None] - m[None, :])).sum(axis=0)
        rejected = log_k >= math.log(1.0 / delta)
        # the CS is an interval [lower, ...]: every m below the first kept one is rejected
        if not rejected.all():
            first = int(np.argmin(rejected))
            return float(ms[start + first - 1]) if start + first > 0 else lower
        lower = float(m[-1])
    return lower


def certify(x: np.ndarray, delta: float = 0.05) -> Bound:
    """Point estimate and both lower bounds of the mean of trials `x` scored in [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and not ((x >= 0.0) & (x <= 1.0)).all():
        raise ValueError("trials must be scored in [0, 1]")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), not {delta}")
    point = float(x.mean()) if x.size else float("nan")
    return Bound(len(x), point, hoeffding_lower(x, delta), betting_lower(x, delta), delta)


def needed_rate(target: float, n: int, delta: float = 0.05) -> float | None:
    """The smallest observed success rate on n trials whose betting lower bound reaches
    `target` (failures spread evenly), or None when even n successes do not."""

    def lower(k: int) -> float:
        x = np.ones(n)
        if k:
            x[np.linspace(0, n - 1, k).round().astype(int)] = 0.0
        return betting_lower(x, delta)

    if n == 0 or lower(0) < target:
        return None
    lo, hi = 0, n  # lower(lo) >= target; find the largest such k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if lower(mid) >= target:
            lo = mid
        else:
            hi = mid
    return 1.0 - lo / n
