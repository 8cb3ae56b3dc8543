"""Channel alignment of a plan for fast kernels.

onnxruntime's CPU provider (at its default level, ORT_ENABLE_ALL) runs convolutions in a blocked
NCHWc layout only when channel counts are multiples of the SIMD block (8 floats for AVX2, 16 for
AVX-512); a compiled model with, say, 13 channels in a layer falls back to slower kernels and can
be slower than the original although it has fewer FLOPs (BENCHMARKS.md §4). `align_plan` re-keeps
the removed units whose removal cost most until every convolutional cut keeps a multiple of
`block` channels (or all of them).

Preserved: every other unit's action; the plan stays valid (folds lean on kept units only, and
re-kept units are kept). Re-keeping replaces an approximation by the unit itself, so the plan's
simulation only moves toward the original.
"""

from __future__ import annotations

import copy

from scmopt.errors import ScmoptError
from scmopt.plan import Plan
from scmopt.units.analysis import UnitGraph


def check_block(block: object) -> None:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ScmoptError(f"align must be a positive channel count, not {block!r}")


def aligned_cuts(ug: UnitGraph) -> list[str]:
    """Cuts read by convolutions, or flattened conv maps (several features per channel)."""
    conv = {n.name for n in ug.model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    return [t for t, c in ug.cuts.items() if c.block > 1 or conv & set(c.consumers)]


def align_plan(ug: UnitGraph, plan: Plan, scores: dict[str, float], block: int) -> Plan:
    """A copy of `plan` in which every convolutional cut keeps a multiple of `block` channels
    or all of them. `scores`: removal cost per unit (higher = re-kept first; ties by unit id).
    Coupled units span several cuts, so the cuts are revisited until none changes."""
    check_block(block)
    plan = copy.deepcopy(plan)
    cuts = aligned_cuts(ug) if block > 1 else []
    changed = True
    while changed:  # each pass re-keeps at least one unit or ends the loop
        changed = False
        for t in cuts:
            chans = ug.cuts[t].units
            kept = sum(u not in plan.actions for u in chans)
            gone = sorted({u for u in chans if u in plan.actions},
                          key=lambda u: (-scores.get(u, 0.0), u))  # fmt: skip
            for u in gone:
                if kept % block == 0:
                    break
                del plan.actions[u]
                kept += chans.count(u)
                changed = True
    return plan
