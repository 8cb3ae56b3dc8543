"""The work of an analysis in forward-pass equivalents (FPE), by stage (issue 13).

One FPE is one pass of the whole model over the calibration set. Every onnxruntime run made
while a `Ledger` is active is counted: its samples times the share of the model's FLOPs its
graph holds (a hooked copy of the whole model counts 1 per sample; a curvature probe on the
subgraph after a cut counts that subgraph's share), divided by the calibration set's size.
The share is read from the node names a session's graph keeps from the analysed model (hooks,
probes and compiled models keep them), weighted by each linear node's MACs (ops.cost); a graph
sharing no linear node with it counts 0, a model without counted FLOPs counts 1 per sample.

Stages are set by the code that does the work (`stage("statistics")`), so the count needs no
cooperation from the modules that run sessions: every session runtime.sessions makes while a
ledger is active counts its runs (runtime.binding.Session); without one nothing is counted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

# a process-wide stack, not a ContextVar: the CLI's heartbeat thread reads the count too
_STACK: list[Ledger] = []


@dataclass
class Ledger:
    """FPE per stage. samples: the calibration set's size (the unit); node_macs: MACs per node
    of the analysed model (ops.cost.Cost.macs, keyed by node name or first output)."""

    samples: int
    node_macs: Mapping[str, int | None]
    fpe: dict[str, float] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    current: str = "other"

    @property
    def total_macs(self) -> float:
        return float(sum(v for v in self.node_macs.values() if v))

    def share(self, model: onnx.ModelProto) -> float:
        """Fraction of the analysed model's MACs that `model`'s graph runs (see module doc)."""
        return graph_share(self.node_macs, model)

    def add(self, samples: int, share: float) -> None:
        """A run of `samples` samples through a graph holding `share` of the model."""
        key = self.current
        self.fpe[key] = self.fpe.get(key, 0.0) + samples * share / max(self.samples, 1)
        self.runs[key] = self.runs.get(key, 0) + 1

    @property
    def total(self) -> float:
        return float(sum(self.fpe.values()))

    def as_dict(self) -> dict[str, Any]:
        """{"total": FPE, "by_stage": {stage: FPE}, "runs": {stage: session runs}}."""
        return {"total": self.total, "by_stage": dict(self.fpe), "runs": dict(self.runs),
                "samples": self.samples}  # fmt: skip


def graph_share(node_macs: Mapping[str, int | None], model: onnx.ModelProto) -> float:
    """Fraction of the MACs `node_macs` counts that `model`'s graph runs (nodes matched by
    name, else first output); 1.0 when nothing is counted."""
    total = float(sum(v for v in node_macs.values() if v))
    if total <= 0:
        return 1.0
    names = {n.name or (n.output[0] if n.output else "") for n in model.graph.node}
    return min(1.0, sum(node_macs.get(k) or 0 for k in names) / total)


def active() -> Ledger | None:
    return _STACK[-1] if _STACK else None


@contextmanager
def counting(ledger: Ledger) -> Iterator[Ledger]:
    """Counts every onnxruntime run made inside the block into `ledger`."""
    _STACK.append(ledger)
    try:
        yield ledger
    finally:
        _STACK.remove(ledger)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Runs inside the block count toward stage `name` (nothing without an active ledger)."""
    ledger = active()
    if ledger is None:
        yield
        return
    before, ledger.current = ledger.current, name
    try:
        yield
    finally:
        ledger.current = before


def batch_of(sess: Any, feeds: Mapping[str, Any]) -> int:
    """Samples of a run: axis 0 of the first graph input fed (1 for a scalar)."""
    for i in sess.get_inputs():
        if i.name in feeds:
            a = feeds[i.name]
            shape = a.shape() if callable(getattr(a, "shape", None)) else np.shape(a)
            return int(shape[0]) if len(shape) else 1
    return 1


def share_for(model: onnx.ModelProto) -> float | None:
    """The share a session of `model` counts with (None: no active ledger, not counted)."""
    ledger = active()
    return None if ledger is None else ledger.share(model)


def counted(fn):
    """Runs `fn` with a fresh ledger active (work.active() inside it): the function fills in
    the calibration size and the node MACs once it knows them and reads the count at the end."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        with counting(Ledger(0, {}, current="setup")):
            return fn(*args, **kwargs)

    return inner


def describe(counted: Mapping[str, Any]) -> str:
    """'38.6 FPE (held-out checks 16.6, statistics 15.6, ...; 1 FPE = one pass over 1024
    samples)' from Ledger.as_dict(); 'not counted' for reports written before FPE."""
    if not counted:
        return "not counted"
    stages = sorted(counted["by_stage"].items(), key=lambda kv: -kv[1])
    parts = ", ".join(f"{k} {v:.1f}" for k, v in stages)
    unit = f"1 FPE = one pass over {counted['samples']} samples"
    return f"{counted['total']:.1f} FPE ({parts}; {unit})"
