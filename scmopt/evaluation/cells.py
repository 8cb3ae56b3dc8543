"""The abstraction's own alignment: cells of low-level units per kept unit (issue 14).

Folding a removed unit u onto kept units merges it into them (the paper's wording). In a
constructive abstraction (Beckers & Halpern 2019; Geiger et al.: one cell of low-level
variables per high-level variable) u belongs to the cell of the kept unit that carries the
largest |coefficient| of its fold; a unit replaced by a constant belongs to no cell. An
interchange on a kept unit then swaps its whole cell in the original network, while the
abstraction swaps the kept unit and lets the fold carry the rest: the cell-aligned IIA
(evaluation.interchange.compare(cells=...)), reported beside the singleton IIA, where removed
units keep their base values in the original.

Cells are read from the Plan alone, per cut and per channel (a channel of a removed unit
follows the kept channel with the largest |coefficient| in its row of plan.cut_rows).
"""

from __future__ import annotations

import numpy as np

from scmopt.plan import Plan
from scmopt.units.analysis import UnitGraph


def parents(ug: UnitGraph, plan: Plan, cuts: list[str] | None = None) -> dict[str, np.ndarray]:
    """cut -> [C] int64: for each channel of a folded unit the kept channel whose cell it is
    in, -1 for kept channels and constants. Cuts without folds are left out."""
    out = {}
    for t in cuts if cuts is not None else list(ug.cuts):
        rows, _ = plan.cut_rows(ug.cuts[t])
        parent = np.full(ug.cuts[t].channels, -1, np.int64)
        for i, row in rows.items():
            if row:
                parent[i] = max(row, key=lambda k, row=row: (abs(row[k]), -k))
        if (parent >= 0).any():
            out[t] = parent
    return out


def extend(mask: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """[n, C] swap mask with every cell member swapped with its kept unit (the original's
    side of a cell-aligned interchange)."""
    members = np.flatnonzero(parent >= 0)
    out = mask.copy()
    out[:, members] = mask[:, parent[members]]
    return out


def cells(ug: UnitGraph, plan: Plan) -> dict[str, dict[str, list[str]]]:
    """cut -> {kept unit: [removed units in its cell]} (the alignment, for the report)."""
    out: dict[str, dict[str, list[str]]] = {}
    for t, parent in parents(ug, plan).items():
        units = ug.cuts[t].units
        found: dict[str, list[str]] = {}
        for i in np.flatnonzero(parent >= 0):
            member, head = units[i], units[int(parent[i])]
            if member not in found.setdefault(head, []):
                found[head].append(member)
        out[t] = found
    return out
