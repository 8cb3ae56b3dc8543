"""Groups of units that a keep fraction counts apart: attention heads and all other units.

A head is one unit spanning 3 x Dh channels of Q, K, V, its attention pattern and Dh context
channels; an FFN neuron or a conv channel is one channel. Counted together, "keep half the
units" of a transformer is half of its 1,000-odd neurons and none of its 16 heads (a head's
removal risk is that of many channels). So keep mode keeps its fraction of each group, heads
with their own fraction when `keep_heads` is given, and removes half of what is left of each
group per round.
"""

from __future__ import annotations

import math

from scmopt.errors import ScmoptError
from scmopt.units import UnitGraph

HEADS, OTHERS = "heads", "units"


def group_of(ug: UnitGraph, uid: str) -> str:
    return HEADS if ug.units[uid].kind == "head" else OTHERS


def min_kept(ug: UnitGraph, among: set[str] | None = None) -> int:
    """Greedy set cover: units of `among` (default: all prunable) needed so that every cut
    whose units are all prunable and all in `among` keeps one."""
    inside = set(ug.prunable) if among is None else among
    need = [set(c.units) for c in ug.cuts.values() if all(u in inside for u in c.units)]
    count = 0
    while need:
        counts: dict[str, int] = {}
        for s in need:
            for u in s:
                counts[u] = counts.get(u, 0) + 1
        best = max(sorted(counts), key=counts.get)
        need = [s for s in need if best not in s]
        count += 1
    return count


def keep_targets(ug: UnitGraph, keep: float, keep_heads: float | None) -> dict[str, int]:
    """Prunable units each group keeps at the end of keep mode. Raises when a fraction would
    empty a cut (every cut keeps one unit)."""
    members: dict[str, set[str]] = {}
    for u in ug.prunable:
        members.setdefault(group_of(ug, u), set()).add(u)
    frac = {OTHERS: keep, HEADS: keep if keep_heads is None else keep_heads}
    flag = {OTHERS: "keep", HEADS: "keep" if keep_heads is None else "keep_heads"}
    targets = {}
    for g, us in sorted(members.items()):
        targets[g] = int(round(frac[g] * len(us)))
        floor = min_kept(ug, us)
        if targets[g] < floor:
            what = "prunable units" if g == OTHERS else "attention heads"
            raise ScmoptError(
                f"{flag[g]}={frac[g]} leaves {targets[g]} of {len(us)} {what}, but every cut "
                f"must keep one: keep at least {floor} ({floor / len(us):.3f})"
            )
    return targets


def round_quota(left: dict[str, int], last: bool) -> dict[str, int]:
    """Units of each group one halving round removes: half of what is left (all of it in the
    last round)."""
    return {g: (n if last else int(math.ceil(n / 2))) for g, n in left.items() if n > 0}
