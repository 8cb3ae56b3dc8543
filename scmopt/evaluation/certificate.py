"""The fidelity certificate of DESIGN §2: a bound on the top-1 flip probability.

For any e > 0, a flip needs the logits to move by at least half the original margin, so
    P(top-1 flips) <= P(margin <= 2e) + D2 / e^2        (Markov on ||f - f^P||^2)
with D2 = E||f - f^P||^2. We minimise over e at the observed margins.
"""

from __future__ import annotations

import numpy as np


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per sample."""
    top2 = np.sort(logits.reshape(len(logits), -1), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def flip_bound(original: np.ndarray, abstract: np.ndarray) -> dict[str, float]:
    """{'d2', 'epsilon', 'bound'}: the tightest bound over e (capped at 1)."""
    flat_o = original.reshape(len(original), -1).astype(np.float64)
    flat_a = abstract.reshape(len(abstract), -1).astype(np.float64)
    d2 = float(np.mean(np.sum((flat_o - flat_a) ** 2, axis=1)))
    m = np.sort(margins(flat_o))
    if d2 == 0.0:
        return {"d2": 0.0, "epsilon": float(m[0] / 2) if len(m) else 0.0,
                "bound": float(np.mean(m <= 0))}  # fmt: skip
    eps = np.unique(np.concatenate([m / 2, np.geomspace(1e-6, max(m.max(), 1e-6), 64)]))
    eps = eps[eps > 0]
    frac = np.searchsorted(m, 2 * eps, side="right") / len(m)
    bounds = frac + d2 / eps**2
    i = int(np.argmin(bounds))
    return {"d2": d2, "epsilon": float(eps[i]), "bound": float(min(bounds[i], 1.0))}
