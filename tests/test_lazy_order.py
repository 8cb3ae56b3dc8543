"""LazyOrder visits units in the order a fresh sort would, while keys change, units go, and
scans stop early (the greedy selection's scan, scmopt.analysis.selection)."""

from __future__ import annotations

from itertools import islice

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scmopt.analysis.lazy_order import LazyOrder


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40))
def test_scans_follow_a_fresh_sort(seed, n):
    rng = np.random.default_rng(seed)
    # few distinct keys: ties are broken by the unit, as sorted((key, unit)) does
    keys = {f"u{i}": float(rng.integers(0, 5)) for i in range(n)}
    q = LazyOrder(keys)
    for _ in range(30):
        for u in rng.choice(sorted(keys), size=min(3, len(keys)), replace=False).tolist():
            keys[u] = float(rng.integers(0, 5))
            q.update(u, keys[u])
        if len(keys) > 1 and rng.random() < 0.3:
            gone = sorted(keys)[int(rng.integers(len(keys)))]
            del keys[gone]
            q.discard(gone)
        stop = int(rng.integers(0, len(keys) + 1))
        scan = q.scan()
        seen = list(islice(scan, stop))
        scan.close()
        assert seen == sorted((k, u) for u, k in keys.items())[:stop]
    assert list(q.scan()) == sorted((k, u) for u, k in keys.items())
