"""Validation on the compiled artifact itself, not only on the plan's simulation.

- compile error: compiled model vs simulation on held-out inputs (the compiler's contract);
- fidelity: top-1 agreement of compiled vs original on plain inputs;
- IIA: the same interchange interventions (DESIGN §2) applied to the original model and to the
  compiled one, through hooks on the compiled model's cut tensors, mapping old channel indices
  to new ones with the plan's kept positions;
- latency: onnxruntime CPU median over repeated runs.

Models exported with a fixed batch size of 1 run with a symbolic batch axis when they allow it
(intervene.dynamic_batch), otherwise one sample per run; interchanges then add the swapped
difference through a perturbation hook instead of gathering the source from the batch.
"""

from __future__ import annotations

import time

import numpy as np
import onnx

from scmopt.plan import Plan
from scmopt.runtime.hooks import HookSpec, dynamic_batch, hook
from scmopt.runtime.sessions import accepts_batch, batched_session, run_batched, session
from scmopt.units.analysis import UnitGraph


def batchable(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto | None:
    """`model` with a symbolic batch axis when it runs on batches that way, else None."""
    dyn = dynamic_batch(model)
    return dyn if accepts_batch(dyn, feeds, "cpu") else None


def logits(model: onnx.ModelProto, feeds: dict[str, np.ndarray], batch_size: int = 256):
    sess = batched_session(dynamic_batch(model), feeds, "cpu")
    if sess is None:
        return run_batched(session(model), feeds, 1)[0]
    return run_batched(sess, feeds, batch_size)[0]


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
    cuts = [t for t, c in ug.cuts.items() if any(ug.units[u].prunable for u in c.units)]
    orig, comp = batchable(ug.model, feeds), batchable(compiled, feeds)
    if orig is None or comp is None:
        return _iia_per_sample(ug, plan, compiled, kept_positions, feeds, p, seed, cuts)
    rng = np.random.default_rng(seed)
    n = len(next(iter(feeds.values())))
    specs = {t: HookSpec(patch=True) for t in cuts}
    orig = session(hook(ug, specs, model=orig).model)
    comp = session(hook(ug, specs, model=comp, kept=kept_positions).model)
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


def _iia_per_sample(ug, plan, compiled, kept_positions, feeds, p, seed, cuts):
    """artifact_iia for models that only run one sample at a time: a null pass captures every
    cut, then each interchange adds mask * (source - base) at its cut. Sources are drawn from
    the whole data (a permutation), swap masks as in the batched path."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(feeds.values())))
    specs = {t: HookSpec(perturb=True, capture=True) for t in cuts}
    channels = {t: len(kept_positions[t]) for t in cuts}
    hooked = {"o": hook(ug, specs), "c": hook(ug, specs, model=compiled, kept=kept_positions)}
    sessions = {k: session(h.model) for k, h in hooked.items()}

    def run(which: str, i: int, deltas: dict[str, np.ndarray]) -> list[np.ndarray]:
        h = hooked[which]
        x = {k: v[i : i + 1] for k, v in feeds.items()}
        for t in cuts:
            shape = (1, channels[t] if which == "c" else ug.cuts[t].channels, 1)
            x[h.inputs[t]["delta"]] = deltas.get(t, np.zeros(shape, np.float32))
        return sessions[which].run([h.model.graph.output[0].name] + [h.outputs[t] for t in cuts], x)

    null = {w: [run(w, i, {}) for i in range(n)] for w in hooked}
    result: dict[str, float] = {}
    removed = plan.removed
    for k, t in enumerate(cuts):
        c = ug.cuts[t].channels
        kept = np.array([u not in removed for u in ug.cuts[t].units])
        src = rng.permutation(n)
        mask = (rng.random((n, c)) < p) & kept
        hits = 0
        for i in range(n):
            out = {}
            for w in hooked:
                cols = kept_positions[t] if w == "c" else np.arange(c)
                base = null[w][i][1 + k].reshape(len(cols), -1)
                diff = null[w][src[i]][1 + k].reshape(len(cols), -1) - base
                d = (mask[i, cols][:, None] * diff).astype(np.float32)[None]
                out[w] = run(w, i, {t: d})[0] if mask[i].any() else null[w][i][0]
            hits += int(out["o"].reshape(-1).argmax() == out["c"].reshape(-1).argmax())
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
