"""Greedy brute force: the exact baseline the search is compared against (BENCHMARKS §3)."""

from __future__ import annotations

import numpy as np

from scmopt.analysis.search import SearchResult, search
from scmopt.units.analysis import UnitGraph


def greedy_search(
    ug: UnitGraph, data: dict[str, np.ndarray], *, keep: float, **kwargs
) -> SearchResult:
    """Greedy brute force: re-measure every candidate (exact ablation) after every removal.
    Cost ~ units^2/2 x data passes of the part below each cut: small models only."""
    return search(ug, data, keep=keep, criterion="ablation", step=1, **kwargs)
