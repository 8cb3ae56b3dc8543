"""Validation on the compiled artifact itself, not only on the plan's simulation.

- compile error: compiled model vs simulation on held-out inputs (the compiler's contract);
- fidelity: top-1 agreement of compiled vs original on plain inputs;
- IIA: the same interchange interventions (DESIGN §2) applied to the original model and to the
  compiled one, through hooks on the compiled model's cut tensors, mapping old channel indices
  to new ones with the plan's kept positions;
- latency: onnxruntime CPU median over repeated runs.
"""

from __future__ import annotations

import time

import numpy as np
import onnx

from scmopt.intervene import HookSpec, hook
from scmopt.plan import Plan
from scmopt.runtime import run_batched, session
from scmopt.units import UnitGraph


def logits(model: onnx.ModelProto, feeds: dict[str, np.ndarray], batch_size: int = 256):
    return run_batched(session(model), feeds, batch_size)[0]


def max_abs_error(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    return float(np.abs(logits(a, feeds) - logits(b, feeds)).max())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)))


def artifact_iia(
    ug: UnitGraph,
    plan: Plan,
    compiled: onnx.ModelProto,
    kept_positions: dict[str, np.ndarray],
    feeds: dict[str, np.ndarray],
    p: float = 0.5,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """IIA per cut (cuts with prunable units): original vs compiled under the same swaps."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(feeds.values())))
    cuts = [t for t, c in ug.cuts.items() if any(ug.units[u].prunable for u in c.units)]
    specs = {t: HookSpec(patch=True) for t in cuts}
    orig = session(hook(ug, specs).model)
    channels = {t: len(kept_positions[t]) for t in cuts}
    comp = session(hook(ug, specs, model=compiled, channels=channels).model)
    result: dict[str, float] = {}
    removed = plan.removed
    for t in cuts:
        cut = ug.cuts[t]
        kept = np.array([u not in removed for u in cut.units])
        hits = 0
        for start in range(0, n, batch_size):
            batch = {k: v[start : start + batch_size] for k, v in feeds.items()}
            b = len(next(iter(batch.values())))
            src = rng.permutation(b).astype(np.int64)
            masks = {}
            for other in cuts:  # only cut t is intervened on
                c = ug.cuts[other].channels
                m = np.zeros((b, c, 1), np.float32)
                if other == t:
                    m[:, :, 0] = (rng.random((b, c)) < p) & kept
                masks[other] = m
            f_orig = orig.run(None, {**batch, **_patch_feeds(specs, masks, src, None)})[0]
            f_comp = comp.run(None, {**batch, **_patch_feeds(specs, masks, src, kept_positions)})[0]
            hits += int(np.sum(f_orig.reshape(b, -1).argmax(1) == f_comp.reshape(b, -1).argmax(1)))
        result[t] = hits / n
    return result


def _patch_feeds(specs, masks, src, kept_positions) -> dict[str, np.ndarray]:
    feeds = {}
    for t in specs:
        m = masks[t] if kept_positions is None else masks[t][:, kept_positions[t]]
        feeds[f"{t}::mask"] = np.ascontiguousarray(m)
        feeds[f"{t}::src"] = src
    return feeds


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
