"""How much curvature probing a search round may do, in forward-pass equivalents (issue 13)."""

from __future__ import annotations

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
    costs 2 k share_t / n (central differences; share_t its part of the model's MACs); the
    screen makes `layer_probes` (4) of them per cut, the band one per probed unit."""
    if cfg.probe_fpe is None or cfg.criterion != "curvature" or not prober.sites:
        return None, cfg.max_probes
    n = len(next(iter(fit.values())))
    ledger = work.active()  # compress counted the MACs before the search: the same values
    macs = (
        ledger.node_macs
        if ledger is not None and ledger.node_macs
        else cost.model_cost(ug.model, {key: v[:1] for key, v in fit.items()}, cfg.device).macs
    )
    shares = [max(work.graph_share(macs, prober.subs[t]), 1e-3) for t in prober.sites]
    screen_cost = 4 * 2 * sum(shares) / n  # per probe sample
    screen = int(cfg.probe_fpe / screen_cost)
    unit_cost = 2 * k * float(np.mean(shares)) / n
    cap = min(cfg.max_probes, max(8, int(cfg.probe_fpe / unit_cost)))
    return (None if screen >= k else max(4, screen)), cap
