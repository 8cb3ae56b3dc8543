"""How much curvature probing a search round may do, in forward-pass equivalents (issue 13)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from scmopt.analysis.config import SearchConfig
from scmopt.analysis.curvature import Prober
from scmopt.ops import cost
from scmopt.runtime import work
from scmopt.units.analysis import UnitGraph


def probe_budget(ug: UnitGraph, prober: Prober, fit: dict[str, np.ndarray], k: int,
                 cfg: SearchConfig) -> tuple[int | None, int]:  # fmt: skip
    """(layer-screen samples, per-unit probe cap) so that each costs at most cfg.probe_fpe
    passes over the fit split per round. A probe of k samples on the subgraph below cut t
    costs r k share_t / n (r = 2 runs for central differences, 1 for forward ones, which also
    run the base once per cut; share_t its part of the model's MACs); the screen makes
    `layer_probes` (4) of them per cut, the band one per probed unit."""
    if cfg.probe_fpe is None or cfg.criterion != "curvature" or not prober.sites:
        return None, cfg.max_probes
    n = len(next(iter(fit.values())))
    macs = node_macs(ug, fit, cfg.device)
    shares = [max(work.graph_share(macs, prober.subs[t]), 1e-3) for t in prober.sites]
    reps = 2 if cfg.central else 1
    screen_cost = (4 * reps + (0 if cfg.central else 1)) * sum(shares) / n  # per probe sample
    screen = int(cfg.probe_fpe / screen_cost)
    unit_cost = reps * k * float(np.mean(shares)) / n
    cap = min(cfg.max_probes, max(8, int(cfg.probe_fpe / unit_cost)))
    return (None if screen >= k else max(4, screen)), cap


def node_macs(ug: UnitGraph, fit: dict[str, np.ndarray], device: str) -> Mapping[str, int | None]:
    """MACs of one sample per linear node of `ug.model`: the ones compress counted for the
    ledger before the search (the same values), else counted on one fit sample."""
    ledger = work.active()
    if ledger is not None and ledger.node_macs:
        return ledger.node_macs
    return cost.model_cost(ug.model, {key: v[:1] for key, v in fit.items()}, device).macs
