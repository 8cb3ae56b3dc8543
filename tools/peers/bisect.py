"""The search every peer uses to meet a budget through its own sparsity knob: a coarse grid up
to the first value whose measure is within the target, then bisection inside that step (the
measures are not monotone near the ends, so a plain bisection over [0, 1] can miss)."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def first_crossing(
    at: Callable[[float], float],
    target: float,
    grid: Sequence[float],
    iters: int,
    close: Callable[[float, float], bool],
) -> None:
    """Evaluates `at` (which caches its results: the caller then picks the best) on `grid`
    up to the first value with at(s) <= target, then bisects between it and the previous grid
    value until `close(lo, hi)` or `iters` steps."""
    lo = hi = None
    for s in grid:
        if at(s) <= target:
            hi = s
            break
        lo = s
    if lo is None or hi is None:
        return
    for _ in range(iters):
        mid = (lo + hi) / 2
        if at(mid) > target:
            lo = mid
        else:
            hi = mid
        if close(lo, hi):
            break
