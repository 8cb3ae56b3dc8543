"""Static cost model of an ONNX graph: parameter count and FLOPs (numpy + onnx only).

FLOPs are 2 x the multiply-accumulates of the linear operators Conv, ConvTranspose, Gemm and
MatMul for one sample. Elementwise ops (Add, Relu, BatchNormalization, pooling, ...) are not
counted: they are a small, architecture-independent fraction of the work of the networks we prune.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto, helper

__all__ = ["count_params", "count_flops", "linear_macs"]

_FLOAT_TYPES = {
    TensorProto.FLOAT,
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
}
_LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

Shape = tuple[int | None, ...]


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
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
                continue
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in _FLOAT_TYPES:
                    total += _tensor_numel(attr.t)
                elif attr.name == "value_float":
                    total += 1
                elif attr.name == "value_floats":
                    total += len(attr.floats)
    return total


def _with_unit_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of model whose symbolic/unknown input dims are 1 and whose stale shape info is gone."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    init_names = {t.name for t in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in init_names or not inp.type.HasField("tensor_type"):
            continue
        tt = inp.type.tensor_type
        if not tt.HasField("shape"):
            continue
        for d in tt.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = 1
    # Shapes recorded by the exporter may carry the symbolic batch; let inference recompute them.
    del m.graph.value_info[:]
    for out in m.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    return m


def _shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Map every tensor name of the main graph to its (possibly partly unknown) static shape."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, data_prop=True)
    g = inferred.graph
    shapes: dict[str, Shape] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


def _known(shapes: dict[str, Shape], name: str, node: onnx.NodeProto) -> tuple[int, ...]:
    """Static shape of ``name``; an unknown leading (batch) dimension is taken as 1."""
    shape = shapes.get(name)
    if shape is not None and len(shape) > 0 and shape[0] is None:
        shape = (1, *shape[1:])
    if shape is None or any(d is None for d in shape):
        raise ValueError(
            f"count_flops: shape of {name!r} (input/output of {node.op_type} node "
            f"{node.name!r}) is not statically known after shape inference: {shape}"
        )
    return tuple(int(d) for d in shape)  # type: ignore[arg-type]


def _node_macs(node: onnx.NodeProto, shapes: dict[str, Shape]) -> int:
    op = node.op_type
    if op == "Conv":
        # Y[N, M, *out] with W[M, C/group, *k]: each output element costs (C/group) * prod(k).
        w = _known(shapes, node.input[1], node)
        y = _known(shapes, node.output[0], node)
        return math.prod(y) * math.prod(w[1:])
    if op == "ConvTranspose":
        # X[N, C, *in] with W[C, M/group, *k]: each input element scatters into (M/group)*prod(k).
        x = _known(shapes, node.input[0], node)
        w = _known(shapes, node.input[1], node)
        return math.prod(x) * math.prod(w[1:])
    if op == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        a = _known(shapes, node.input[0], node)
        b = _known(shapes, node.input[1], node)
        m, k = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
        n = b[0] if attrs.get("transB", 0) else b[1]
        return m * k * n
    if op == "MatMul":
        a = _known(shapes, node.input[0], node)
        y = _known(shapes, node.output[0], node)
        return math.prod(y) * a[-1]
    return 0


def linear_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates per linear node (keyed by node name, else output name), batch 1."""
    m = _with_unit_batch(model)
    shapes = _shapes(m)
    out: dict[str, int] = {}
    for node in m.graph.node:
        if node.op_type in _LINEAR_OPS and node.domain in ("", "ai.onnx"):
            out[node.name or node.output[0]] = int(_node_macs(node, shapes))
    return out


def count_flops(model: onnx.ModelProto) -> int:
    """FLOPs of one sample: 2 x MACs of Conv, ConvTranspose, Gemm and MatMul nodes.

    Symbolic or unknown graph-input dimensions (the dynamic batch) are set to 1 before shape
    inference, and a leading dimension that inference still cannot resolve (a batch that went
    through shape arithmetic onnx cannot propagate, e.g. ConstantOfShape -> Expand) is taken as 1;
    static dimensions are used as given. Grouped/depthwise convolutions cost
    N_out_elems x (Cin/group) x prod(kernel).
    Elementwise ops, normalisation, pooling and activations are not counted. Linear nodes inside
    subgraphs (If/Loop bodies) are not counted. Raises ValueError if a linear node's shapes cannot
    be inferred statically.
    """
    return 2 * sum(linear_macs(model).values())
