"""onnxsim's structured channel pruning on the zoo ONNX files, at a target unit count.

`onnxsim.pruning.apply_structured_pruning` ranks each matched producer's output channels by the
L2 norm of its filter / weight row (Li et al.); `apply_structured_wanda_pruning` by
||W_row||_2 * ||X||_2 with X the calibration activation at the consumer. Both act only on the
producer -> consumer chains they can match (no MaxPool / Flatten hops, bounded residual
groups), remove `round(n * sparsity)` channels of each matched chain (at least one kept) or,
with `global_sparsity`, that fraction of the pooled eligible chains. `sparsity` is therefore
not a unit count: we bisect it until the pruned model has the target number of units as counted
by scmopt (`scmopt.units.analyze(model).units`), or as close as onnxsim can get.

Compensation (optional, no retraining): `onnxsim.finetune.apply_pruning_finetune` refits every
surviving MatMul/Gemm by ridge regression onto the original's activations (Conv layers are not
refitted); `onnxsim.bias_correction.correct_bias` adds a per-channel correction after each
Conv/Gemm/MatMul whose mean output moved.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import onnx

from peers.bisect import first_crossing

METHODS = ("l2", "wanda")
COMPENSATIONS = (None, "finetune", "bias")


def _units(model: onnx.ModelProto) -> int:
    from scmopt import units

    return len(units.analyze(model).units)


def prune(
    model: onnx.ModelProto,
    sparsity: float,
    method: str,
    global_sparsity: bool,
    calib: list[dict[str, np.ndarray]],
) -> onnx.ModelProto:
    import onnxsim.pruning as P

    m = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "l2":
            return P.apply_structured_pruning(m, sparsity=sparsity, global_sparsity=global_sparsity)
        return P.apply_structured_wanda_pruning(
            m, calibration_data=calib, sparsity=sparsity, global_sparsity=global_sparsity
        )


def compensate(
    original: onnx.ModelProto, pruned: onnx.ModelProto, how: str | None, calib
) -> onnx.ModelProto:
    if how is None:
        return pruned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "finetune":
            from onnxsim.finetune import apply_pruning_finetune

            return apply_pruning_finetune(
                copy.deepcopy(original), copy.deepcopy(pruned), calibration_data=calib
            )
        if how == "bias":
            from onnxsim.bias_correction import correct_bias

            return correct_bias(
                copy.deepcopy(original), copy.deepcopy(pruned), calibration_data=calib
            )
    raise ValueError(how)


@dataclass
class Pruned:
    model: onnx.ModelProto
    sparsity: float
    units: int
    reached: bool  # units == target
    evaluations: int


def to_units(
    model: onnx.ModelProto,
    target: int,
    method: str,
    global_sparsity: bool,
    calib: list[dict[str, np.ndarray]],
    iters: int = 24,
) -> Pruned:
    """Bisects `sparsity` so that the pruned model has `target` units (or the closest count
    onnxsim reaches; ties go to the larger model)."""
    cache: dict[float, tuple[int, onnx.ModelProto]] = {}

    def at(s: float) -> int:
        if s not in cache:
            m = prune(model, s, method, global_sparsity, calib)
            cache[s] = (_units(m), m)
        return cache[s][0]

    first_crossing(at, target, [round(0.05 * i, 2) for i in range(20)] + [0.99, 0.999], iters,
                   lambda lo, hi: at(hi) == target or hi - lo < 1e-5)  # fmt: skip
    best = min(cache, key=lambda s: (abs(cache[s][0] - target), -cache[s][0], s))
    u, m = cache[best]
    return Pruned(m, best, u, u == target, len(cache))
