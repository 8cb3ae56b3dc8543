"""Channel maps of peer models (onnxsim, Torch-Pruning outputs): which original channel each of
a pruned model's channels is, for interchange interventions on it (scmopt results carry their
own map, `scmopt.api.Result.kept`).
"""

from __future__ import annotations

import numpy as np
import onnx

from scmopt import units
from scmopt.units.analysis import UnitGraph


def _producer_biases(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """node name -> bias per output channel, for Conv / Gemm with a constant bias."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits:
            out[n.name] = inits[n.input[2]].astype(np.float64).ravel()
    return out


def kept_positions_by_bias(ug: UnitGraph, candidate: onnx.ModelProto) -> dict[str, np.ndarray]:
    """For each cut of `ug` that `candidate` still has (same tensor name): the original channel
    index of each of the candidate's channels. Channels are matched through the producers
    (Conv / Gemm nodes of the same name in both models) by their bias values: removing channels
    by slicing keeps a surviving channel's bias bit-identical (verified to be unique). Use on a
    model whose producers were only sliced, not refitted."""
    cand_ug = units.analyze(candidate)
    ob, cb = _producer_biases(ug.model), _producer_biases(cand_ug.model)
    outs = {n.name: n.output[0] for n in ug.model.graph.node}
    cand_outs = {n.name: n.output[0] for n in cand_ug.model.graph.node}
    to_orig: dict[str, str] = {}  # candidate unit id -> original unit id
    for node, b in ob.items():
        if node not in cb or outs.get(node) not in ug.layouts:
            continue
        lay = list(ug.layouts[outs[node]].labels)
        clay = cand_ug.layouts.get(cand_outs.get(node, ""))
        clay = None if clay is None else list(clay.labels)
        if clay is None:
            continue
        for j, v in enumerate(cb[node]):
            hit = np.flatnonzero(np.abs(b - v) <= 1e-6 * max(1.0, abs(v)))
            if len(hit) != 1:
                raise ValueError(f"cannot map channel {j} of {node}: {len(hit)} bias matches")
            prev = to_orig.setdefault(clay[j], lay[int(hit[0])])
            if prev != lay[int(hit[0])]:
                raise ValueError(
                    f"inconsistent channel map for {clay[j]} ({prev} vs {lay[hit[0]]})"
                )
    result: dict[str, np.ndarray] = {}
    for t, cut in ug.cuts.items():
        ccut = cand_ug.cuts.get(t)
        if ccut is None:
            continue
        index = {u: i for i, u in enumerate(cut.units)}
        pos = []
        for u in ccut.units:
            orig = to_orig.get(u, u)  # units without biased producers: same id, never pruned
            if orig not in index:
                raise ValueError(f"unit {orig} not in cut {t} of the original")
            pos.append(index[orig])
        pos_a = np.asarray(pos, dtype=np.int64)
        if len(set(pos)) != len(pos) or np.any(np.diff(pos_a) <= 0):
            raise ValueError(f"cut {t}: channel map is not an ordered subset ({pos[:8]}...)")
        result[t] = pos_a
    return result
