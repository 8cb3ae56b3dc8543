"""Torch-Pruning (DepGraph) one-shot structured pruning of the zoo's torch models, no retraining.

Importances: magnitude (L2 of the coupled weights, `MagnitudeImportance(p=2)`), BN scale
(|gamma|, network slimming; only models with BatchNorm), Taylor (|w * dL/dw|, first order,
Molchanov et al.) and Hessian (w^2 * E[g^2], OBD with the empirical Fisher diagonal). Taylor and
Hessian use the cross-entropy on the calibration split's labels. The gradient statistics are
computed once per model and copied into every pruned copy, so bisecting the pruning ratio does
not recompute them.

Note: torch_pruning 1.6's `HessianImportance.accumulate_grad` tests `name not in
self._accu_grad` on a dict keyed by parameters, so every call overwrites instead of summing
(only the last sample counts). We accumulate the per-sample squared gradients ourselves and hand
the mean to the importance through `param.grad`, which is what its `__call__` does with a
correct accumulator.

Pruning `ratio` is per layer group (local) or global; the classifier is ignored. The pruned
module is exported with the zoo's exporter (BN folded) and its units counted by scmopt; the ratio
is bisected to reach a target unit count.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx

from peers.bisect import first_crossing

IMPORTANCES = ("magnitude", "bnscale", "taylor", "hessian")


def has_bn(model) -> bool:
    import torch

    return any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def gradients(model, x: np.ndarray, y: np.ndarray, kind: str, batch: int = 256) -> dict:
    """name -> gradient statistic per parameter: mean-loss gradient (taylor) or the mean of
    per-sample squared gradients (hessian)."""
    import torch
    import torch.nn.functional as F

    m = copy.deepcopy(model).eval()
    params = dict(m.named_parameters())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    if kind == "taylor":
        m.zero_grad()
        for s in range(0, len(x), batch):
            loss = F.cross_entropy(m(xt[s : s + batch]), yt[s : s + batch], reduction="sum")
            loss.backward()
        return {n: p.grad.detach() / len(x) for n, p in params.items()}
    if kind == "hessian":
        try:
            from torch.func import functional_call, grad, vmap

            def loss_one(pr, xi, yi):
                out = functional_call(m, pr, (xi.unsqueeze(0),))
                return F.cross_entropy(out, yi.unsqueeze(0))

            pr = {n: p.detach() for n, p in params.items()}
            g = vmap(grad(loss_one), in_dims=(None, 0, 0))
            for s in range(0, len(x), 64):
                gs = g(pr, xt[s : s + 64], yt[s : s + 64])
                for n in acc:
                    acc[n] += gs[n].pow(2).sum(0)
        except Exception:  # modules vmap cannot trace: one backward per sample
            for i in range(len(x)):
                m.zero_grad()
                F.cross_entropy(m(xt[i : i + 1]), yt[i : i + 1]).backward()
                for n, p in params.items():
                    if p.grad is not None:
                        acc[n] += p.grad.detach().pow(2)
        return {n: a / len(x) for n, a in acc.items()}
    raise ValueError(kind)


def importance(kind: str):
    import torch_pruning as tp

    return {
        "magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
        "bnscale": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.TaylorImportance(),
        "hessian": lambda: tp.importance.HessianImportance(),
    }[kind]()


def prune(model, example: np.ndarray, kind: str, ratio: float, global_pruning: bool,
          final: str, grads: dict | None = None):  # fmt: skip
    """A pruned deep copy of `model`."""
    import torch
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    if grads is not None:
        for n, p in m.named_parameters():
            p.grad = grads[n].clone()
    pruner = tp.pruner.MetaPruner(
        m,
        torch.from_numpy(example[:2]),
        importance=importance(kind),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        ignored_layers=[getattr(m, final)],
    )
    pruner.step()
    m.zero_grad(set_to_none=True)
    return m.eval()


@dataclass
class Pruned:
    model: onnx.ModelProto
    ratio: float
    units: int
    reached: bool
    evaluations: int


def to_units(model, example: np.ndarray, target: int, kind: str, global_pruning: bool,
             final: str, grads: dict | None = None, iters: int = 16) -> Pruned:  # fmt: skip
    """Bisects the pruning ratio to reach `target` units (scmopt's count of the exported
    model), or the closest count; ties go to the larger model."""
    from peers.torch_zoo import export
    from scmopt import units

    cache: dict[float, tuple[int, onnx.ModelProto]] = {}

    def at(r: float) -> int:
        if r not in cache:
            onx = export(prune(model, example, kind, r, global_pruning, final, grads), example)
            cache[r] = (len(units.analyze(onx).units), onx)
        return cache[r][0]

    # The unit count is not monotone in the ratio near 1 (Torch-Pruning refuses to empty a
    # layer and then skips it), so: coarse grid, first crossing, then bisection inside it.
    first_crossing(at, target, [round(0.05 * i, 2) for i in range(20)], iters,
                   lambda lo, hi: at(hi) == target or hi - lo < 1e-4)  # fmt: skip
    best = min(cache, key=lambda r: (abs(cache[r][0] - target), -cache[r][0], r))
    u, onx = cache[best]
    return Pruned(onx, best, u, u == target, len(cache))
