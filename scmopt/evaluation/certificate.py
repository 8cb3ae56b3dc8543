"""The fidelity certificate of DESIGN §2: a bound on the top-1 flip probability.

For any e > 0, a flip needs the logits to move by at least half the original margin, so
    P(top-1 flips) <= P(margin <= 2e) + D2 / e^2        (Markov on ||f - f^P||^2)
with D2 = E||f - f^P||^2, minimised over e (exactly: margin_bound). The report, the search's
metrics and validate all take it from here.
"""

from __future__ import annotations

import numpy as np


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per sample (0 for single-value outputs)."""
    a = np.asarray(logits)
    if not len(a) or a.size // len(a) < 2:
        return np.zeros(len(a))
    flat = a.reshape(len(a), -1).astype(np.float64)
    top2 = np.sort(flat, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def margin_bound(margin: np.ndarray, d2: float) -> dict[str, float]:
    """{'d2', 'epsilon', 'bound'}: the bound minimised over e (capped at 1), from the
    reference's per-sample margins and the mean squared output distortion d2.

    Between two observed margins the bound decreases in e, so its infimum is the limit just
    below e = v / 2 for an observed margin v: (#margins < v) / n + 4 d2 / v^2."""
    m = np.sort(np.asarray(margin, dtype=np.float64))
    if not len(m):
        return {"d2": float(d2), "epsilon": 0.0, "bound": 1.0}
    if d2 <= 0.0:
        return {"d2": 0.0, "epsilon": float(m[0] / 2), "bound": float(np.mean(m <= 0))}
    v = np.unique(m[m > 0])
    if not len(v):
        return {"d2": float(d2), "epsilon": 0.0, "bound": 1.0}
    bounds = np.searchsorted(m, v, side="left") / len(m) + 4.0 * d2 / v**2
    i = int(np.argmin(bounds))
    return {"d2": float(d2), "epsilon": float(v[i] / 2), "bound": float(min(bounds[i], 1.0))}


def flip_bound(original: np.ndarray, abstract: np.ndarray) -> dict[str, float]:
    """{'d2', 'epsilon', 'bound'} of `abstract`'s outputs against `original`'s."""
    flat_o = original.reshape(len(original), -1).astype(np.float64)
    flat_a = abstract.reshape(len(abstract), -1).astype(np.float64)
    d2 = float(np.mean(np.sum((flat_o - flat_a) ** 2, axis=1)))
    return margin_bound(margins(flat_o), d2)
