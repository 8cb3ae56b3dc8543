"""Validation on the compiled artifact itself, not only on the plan's simulation.

- logits / max_abs_error: the compiled model against the plan's simulation (the compiler's
  contract) on held-out inputs;
- evaluate_artifact: fidelity, risks, IIA per cut, accuracy and the certificate of the
  compiled model against the original (evaluation.metrics), under the interchange
  interventions of DESIGN §2 drawn by evaluation.sampler: the same draws the search's held-out
  checks use, applied to the original and, through hooks on the compiled model's cut tensors,
  to the compiled one (old channel indices mapped to new ones with the kept positions);
- latency: onnxruntime CPU median over repeated runs.

Models exported with a fixed batch size run with a symbolic batch axis when they allow it
(runtime.hooks.dynamic_batch), otherwise one sample per run; the numbers are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnx

from scmopt.evaluation.cells import parents
from scmopt.evaluation.interchange import (
    HookedModel,
    Network,
    Progress,
    Side,
    compare,
    sites,
    split_batches,
)
from scmopt.evaluation.metrics import Agreement, Metrics, top1
from scmopt.evaluation.metrics import other_outputs as judge_outputs
from scmopt.evaluation.sampler import InterventionSampler
from scmopt.io.data import token_positions
from scmopt.plan import Plan
from scmopt.runtime.hooks import dynamic_batch
from scmopt.runtime.sessions import accepts_batch, batched_session, run_batched, session
from scmopt.units.analysis import UnitGraph


def batchable(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto | None:
    """`model` with a symbolic batch axis when it runs on batches that way, else None."""
    dyn = dynamic_batch(model)
    return dyn if accepts_batch(dyn, feeds, "cpu") else None


def outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
            batch_size: int = 256) -> list[np.ndarray]:  # fmt: skip
    """Every output of `model` on `feeds` (CPU; one sample per run when it cannot batch)."""
    sess = batched_session(dynamic_batch(model), feeds, "cpu")
    if sess is None:
        return run_batched(session(model), feeds, 1)
    return run_batched(sess, feeds, batch_size)


def other_outputs(original: onnx.ModelProto, candidate: onnx.ModelProto,
                  feeds: dict[str, np.ndarray], batch_size: int = 256,
                  candidate_outputs: list[np.ndarray] | None = None,
                  original_outputs: Callable[[], list[np.ndarray]] | None = None,
                  ) -> list[dict]:  # fmt: skip
    """Agreement of the outputs after the first (evaluation.metrics.other_outputs), when both
    models have the same outputs by name; `candidate_outputs`: the candidate's, if already run;
    `original_outputs`: gives the original's (a caller judging many candidates on one split
    runs the original once)."""
    names = [o.name for o in original.graph.output]
    if len(names) < 2 or [o.name for o in candidate.graph.output] != names:
        return []
    f_cand = candidate_outputs or outputs(candidate, feeds, batch_size)
    f_orig = original_outputs() if original_outputs else outputs(original, feeds, batch_size)
    return judge_outputs(names[1:], f_orig[1:], f_cand[1:], token_positions(feeds))


def logits(model: onnx.ModelProto, feeds: dict[str, np.ndarray], batch_size: int = 256):
    """First output of `model` on `feeds` (the one the analysis reads)."""
    return outputs(model, feeds, batch_size)[0]


def max_abs_error(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    return float(np.abs(logits(a, feeds) - logits(b, feeds)).max())


def evaluate_artifact(
    ug: UnitGraph,
    candidate: onnx.ModelProto,
    kept_positions: dict[str, np.ndarray] | None,
    feeds: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
    *,
    p: float = 0.5,
    seed: int = 0,
    batch_size: int = 256,
    interventions: bool = True,
    metric: Agreement = top1,
    device: str = "cpu",
    progress: Progress | None = None,
    plan: Plan | None = None,
    max_cuts: int | None = None,
) -> Metrics:
    """Metrics of `candidate` (a compiled model, or any model whose cut tensors keep the
    original's names) against `ug.model` on `feeds`.

    kept_positions: cut -> the original channel index of each of the candidate's channels
    (scmopt.api.Result.kept). Interchanges are made at every site the map covers; when it
    misses some (or is None), `unmapped` lists them and risk and iia are None (the per-cut
    numbers of the mapped sites are still given). `plan`: the candidate's plan, for the
    cell-aligned IIA (Metrics.iia_cells; evaluation.cells). `max_cuts`: sweep at most this
    many of the mapped sites (evenly spread in topological order, `spread`); the others are
    listed in `unmeasured` and iia / risk are means over the swept ones. A sweep costs three
    passes of both models per site (EfficientNet-Lite1's 43 sites: 22 of its 71 FPE).
    Guaranteed: with the same (feeds, p, seed) the draws are those of
    analysis.measure.Evaluator, and no number depends on batch_size; a swept site's numbers do
    not depend on which other sites are swept (the draws are seeded by the cut's name).
    """
    every = sites(ug) if interventions else []
    kept_positions = kept_positions or {}
    mapped = [t for t in every if t in kept_positions]
    cuts = spread(mapped, max_cuts)
    orig = HookedModel(ug, feeds, cuts=cuts, device=device)
    comp = HookedModel(ug, feeds, model=candidate, kept=kept_positions, cuts=cuts, device=device)
    n = len(next(iter(feeds.values())))
    size = min(batch_size, orig.max_batch, comp.max_batch)  # memory only: changes no number
    sampler, batches = InterventionSampler(n, p, seed), split_batches(n, size)
    kept = {}
    for t in cuts:
        kept[t] = np.zeros(ug.cuts[t].channels, dtype=bool)
        kept[t][np.asarray(kept_positions[t], dtype=np.int64)] = True
    m = compare(Side(Network(orig), feeds, sampler, batches),
                Side(Network(comp), feeds, sampler, batches), kept, labels,
                interventions=interventions, metric=metric, progress=progress,
                cells=None if plan is None else parents(ug, plan, cuts))  # fmt: skip
    m.unmapped = [t for t in every if t not in kept_positions]
    m.unmeasured = [t for t in mapped if t not in cuts]
    if m.unmapped:
        m.risk = m.iia = m.iia_cells = None
    return m


def spread(cuts: list[str], k: int | None) -> list[str]:
    """At most `k` of `cuts` (None: all), evenly spaced from the first to the last, in their
    order: shallow, middle and deep sites all get measured."""
    if k is None or len(cuts) <= k:
        return list(cuts)
    if k < 1:
        return []
    picks = sorted({int(round(i)) for i in np.linspace(0, len(cuts) - 1, k)})
    return [cuts[i] for i in picks]


def latency_ms(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], batch: int = 1, runs: int = 20
) -> float:
    """Median wall time of one onnxruntime run on the CPU, in milliseconds."""
    sess = session(model, device="cpu")
    x = {k: v[:batch] for k, v in feeds.items()}
    sess.run(None, x)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)
