"""Cost model of an ONNX graph: parameter count and FLOPs of one sample. Never raises.

FLOPs are 2 x the multiply-accumulates of the linear operators Conv, ConvTranspose, Gemm and
MatMul for one sample (scmopt.ops.macs). Elementwise ops (Add, Relu, BatchNormalization,
pooling, ...) are not counted: they are a small, architecture-independent fraction of the work
of the networks we prune. Shapes come from scmopt.io.shapes (static inference, then one
onnxruntime run for what inference leaves unknown); a linear node whose shapes still cannot be
known is listed in `Cost.unknown` and contributes nothing, it never raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto

from scmopt.io.shapes import resolve_shapes
from scmopt.ops.registry import lookup

__all__ = ["Cost", "count_params", "count_flops", "linear_macs", "model_cost"]

_FLOAT_TYPES = {
    TensorProto.FLOAT,
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
}
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Cost:
    """Parameters and FLOPs of one sample.

    `macs` has one entry per linear node of the main graph (keyed by node name, else its first
    output): its multiply-accumulates, or None when its shapes could not be known; those nodes
    are listed in `unknown` and `flops` counts only the others (a lower bound then).
    `measured` says an onnxruntime run supplied shapes static inference left unknown; `note`
    why shapes stayed unknown, when some did.
    """

    flops: int
    params: int
    macs: dict[str, int | None] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    measured: bool = False
    note: str | None = None

    def unknown_text(self, n: int = 4) -> str:
        """'' or ' (2 linear nodes of unknown shape: a, b)'."""
        if not self.unknown:
            return ""
        more = f" (+{len(self.unknown) - n} more)" if len(self.unknown) > n else ""
        names = ", ".join(self.unknown[:n])
        return f" ({len(self.unknown)} linear nodes of unknown shape: {names}{more})"

    def describe(self) -> str:
        """'1,234' or '1,234 (2 linear nodes of unknown shape: a, b)'."""
        return f"{self.flops:,}{self.unknown_text()}"


def _tensor_numel(t: onnx.TensorProto) -> int:
    return int(math.prod(t.dims))


def _graphs(graph: onnx.GraphProto):
    """Yield graph and all its subgraphs (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def count_params(model: onnx.ModelProto) -> int:
    """Number of elements of all floating-point initializers and float ``Constant`` node tensors.

    Integer tensors (shapes, indices) are not parameters and are not counted; an initializer that
    is also listed as a graph input (IR < 4) is counted once. Subgraphs are included.
    """
    total = 0
    for g in _graphs(model.graph):
        total += sum(_tensor_numel(t) for t in g.initializer if t.data_type in _FLOAT_TYPES)
        for node in g.node:
            if node.op_type != "Constant" or node.domain not in _DEFAULT_DOMAINS:
                continue
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in _FLOAT_TYPES:
                    total += _tensor_numel(attr.t)
                elif attr.name == "value_float":
                    total += 1
                elif attr.name == "value_floats":
                    total += len(attr.floats)
    return total


def _linear_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node
            if (h := lookup(n.domain, n.op_type)) is not None and h.counts_macs]  # fmt: skip


def model_cost(
    model: onnx.ModelProto,
    sample: Mapping[str, np.ndarray] | None = None,
    device: str = "auto",
) -> Cost:
    """Parameters and FLOPs of one sample of `model`; never raises on a readable model.

    Shapes are those of one sample: `sample` (cut to one sample; e.g. a calibration sample),
    else symbolic or unknown input dimensions taken as 1. Static dimensions are used as given
    (a model with a fixed batch of 3 costs three samples). Linear nodes inside subgraphs
    (If/Loop bodies) are not counted. `model` is not modified.
    """
    nodes = _linear_nodes(model)
    wanted = [t for n in nodes for t in (*n.input, *n.output) if t]
    shapes = resolve_shapes(model, sample, names=wanted, device=device) if nodes else None
    macs: dict[str, int | None] = {}
    for node in nodes:
        handler = lookup(node.domain, node.op_type)
        macs[node.name or node.output[0]] = handler.macs(node, shapes.dims)
    unknown = [k for k, v in macs.items() if v is None]
    return Cost(
        flops=2 * sum(v for v in macs.values() if v is not None),
        params=count_params(model),
        macs=macs,
        unknown=unknown,
        measured=bool(shapes and shapes.measured),
        note=shapes.note if shapes is not None and unknown else None,
    )


def linear_macs(
    model: onnx.ModelProto, sample: Mapping[str, np.ndarray] | None = None
) -> dict[str, int | None]:
    """Multiply-accumulates per linear node for one sample (None: shapes unknown); see
    model_cost."""
    return model_cost(model, sample).macs


def count_flops(model: onnx.ModelProto, sample: Mapping[str, np.ndarray] | None = None) -> int:
    """FLOPs of one sample: 2 x MACs of the Conv, ConvTranspose, Gemm and MatMul nodes whose
    shapes are known (see model_cost; never raises, unknown nodes count 0)."""
    return model_cost(model, sample).flops
