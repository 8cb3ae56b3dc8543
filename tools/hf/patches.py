"""Diagnostic monkeypatches for tools/check_hf.py --patched (scmopt/ itself is NOT changed).

Each patch stands for a change to scmopt that would let the Hugging Face exports' heads become
units; `python tools/check_hf.py --patched` measures what they give (units, exactness). They are
experiments to locate the blockers, not fixes to ship as they are:

1. shapes   canonicalize (scmopt.io.graph): onnxruntime's symbolic shape inference after ONNX's.
            ONNX inference cannot resolve HF's head split Reshape(B, T, -1, Dh) with a run-time
            target nor the mask Expand(B, -1, T, T), so the head axis is symbolic downstream.
2. noop     scmopt.units.layout._channel_grid: a dim with the same symbol at the same axis of
            input and output (the SDPA lowering's Reshape(B, -1, T, Dh) of [B, H, T, Dh]) is
            taken as equal instead of refusing "dynamic shapes around the channel axis".
3. isnan    IsNaN handled as a channel-wise unary op (SDPA's Where(IsNaN(softmax), 0, softmax)).
(A fourth, kt, the dynamo SDPA's batch-merging K^T as one Transpose, is now
scmopt.io.key_transpose.)
"""

from __future__ import annotations

import copy

import onnx

APPLIED: list[str] = []


def _shapes() -> None:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from scmopt.io import graph
    from scmopt.units import analysis

    canon = graph.canonicalize

    def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
        out = canon(model)
        try:
            m = copy.deepcopy(out)
            del m.graph.value_info[:]
            m = SymbolicShapeInference.infer_shapes(m, auto_merge=True)
        except Exception:  # noqa: BLE001
            return out
        for field in ("input", "output"):  # auto_merge may rewrite I/O dims: keep the export's
            del getattr(m.graph, field)[:]
            getattr(m.graph, field).extend(getattr(out.graph, field))
        return m

    graph.canonicalize = canonicalize
    analysis.canonicalize = canonicalize


def _noop() -> None:
    from scmopt.units import layout

    grid = layout._channel_grid

    def channel_grid(lay, in_shape, out_shape):
        ins, outs = list(in_shape), list(out_shape)
        if len(ins) == len(outs):
            for i, (a, b) in enumerate(zip(ins, outs, strict=True)):
                if i > 0 and i != lay.axis and isinstance(a, str) and a == b:
                    ins[i] = outs[i] = 3  # any size: the channel map does not depend on it
        return grid(lay, ins, outs)

    layout._channel_grid = channel_grid


def _isnan() -> None:
    from scmopt.ops import elementwise
    from scmopt.ops.registry import register

    register("IsNaN")(elementwise.Unary)


PATCHES = {"shapes": _shapes, "noop": _noop, "isnan": _isnan}


def apply(names: list[str] | None = None) -> list[str]:
    for name in names or list(PATCHES):
        if name not in APPLIED:
            PATCHES[name]()
            APPLIED.append(name)
    return APPLIED
