"""The compression report as a typed value (`Report`), readable like the dict it replaces.

`report["fidelity"]` is the fidelity the CLI prints: the compiled model's agreement with the
original on the validation split. The detail (risks, IIA per cut, the certificate, the
search's own held-out metrics) is under `report["validation"]` (`validation_detail`).
`to_dict()` gives the JSON document; mapping access (`report[key]`, `get`, `in`) works on
the same keys, and optional sections that are absent (accuracy without labels, output before
the CLI names it) are missing keys, as they were in the dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from scmopt.evaluation.metrics import Metrics

_OPTIONAL = ("accuracy", "output")


def validation_detail(m: Metrics, *, p: float, search: dict[str, Any],
                      delta: float = 0.05, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """report["validation"] from the artifact's metrics on the validation split (interchanges
    at swap probability p) and the search's held-out metrics; `confidence` holds the
    anytime-valid lower bounds at level delta on that split (data the search never saw)."""
    return {
        "confidence": m.confidence(delta, seed),
        "agreement": m.fidelity,
        "metric": m.metric,
        "agreement_p5": m.fidelity_p5,
        "risk": m.risk,
        "risk_plain": m.risk_plain,
        "risk_per_cut": m.risk_per_cut,
        "iia": m.iia,
        "iia_per_cut": m.iia_per_cut,
        "iia_unmeasured": m.unmeasured,  # sites left out of the sweep (--iia-cuts)
        "iia_p": p,
        "iia_cells": m.iia_cells,
        "iia_cells_per_cut": m.iia_cells_per_cut,
        "samples": m.n,
        "certificate": m.certificate,
        "other_outputs": m.other_outputs,
        "search": search,
    }


@dataclass
class Report(Mapping):
    """What `scmopt.compress` measured and decided; JSON via `to_dict()`."""

    scmopt_version: str
    input: str
    units: dict[str, int]
    params: dict[str, int]
    flops: dict[str, Any]
    fidelity: float  # agreement of the compiled model on the validation split
    validation: dict[str, Any]  # see validation_detail
    compile_max_abs_error: float
    timing_s: dict[str, Any]
    groups: list[dict[str, Any]]
    plan: dict[str, Any]
    trajectory: list[dict[str, Any]]
    scores: dict[str, float]
    notes: list[str]
    settings: dict[str, Any]
    accuracy: dict[str, Any] | None = None  # before / after / samples, when labels are given
    work: dict[str, Any] = field(default_factory=dict)  # FPE by stage (runtime.work.Ledger)
    # the alignment: cut -> {kept unit: [folded units in its cell]} (evaluation.cells)
    cells: dict[str, Any] = field(default_factory=dict)
    output: str | None = None  # the output path, set by the CLI
    extra: dict[str, Any] = field(default_factory=dict)  # keys added by later steps

    def _names(self) -> list[str]:
        names = [f.name for f in fields(self) if f.name != "extra"]
        return [k for k in names if not (k in _OPTIONAL and getattr(self, k) is None)]

    def __getitem__(self, key: str) -> Any:
        if key in self._names():
            return getattr(self, key)
        if key in self.extra:
            return self.extra[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in {f.name for f in fields(self)} and key != "extra":
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names() + list(self.extra))

    def __len__(self) -> int:
        return len(self._names()) + len(self.extra)

    def to_dict(self) -> dict[str, Any]:
        """The report as a plain dict (the JSON report)."""
        return {k: self[k] for k in self}
