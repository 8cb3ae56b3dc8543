"""W M for a plan's replacement matrix M that is the identity except on removed rows.

The plan replaces a cut x by M x + B (scmopt.plan); a consumer W x becomes (W M) x + W B. M
differs from the identity only on removed channels, each a constant (zero row) or a fold onto a
few kept channels, so W M costs O(removed x folds x weight row), not the O(C^2 O) of a dense
product (C = O = 4096: 92.6 s as einsum).
"""

from __future__ import annotations

import numpy as np

Rows = dict[int, dict[int, float]]  # removed channel -> {kept channel: coefficient}


def mix(w: np.ndarray, rows: Rows) -> np.ndarray:
    """`w` indexed by input channel on axis 0 ([C, ...]) -> (W M) on the same axis."""
    out = w.copy()
    out[list(rows)] = 0.0
    for i, coef in rows.items():
        for k, a in coef.items():
            out[k] += a * w[i]
    return out
