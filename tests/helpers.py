"""Numerical comparison helpers shared by the compiler tests."""

from __future__ import annotations

import numpy as np
import onnx

from models import load_split, model_path
from scmopt.io import graph
from scmopt.runtime import sessions as runtime


def outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return runtime.session(model, device="cpu").run(None, feeds)


def relative_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Max abs difference over all outputs, relative to the reference output scale."""
    return max(
        float(np.abs(x - y).max() / (np.abs(y).max() + 1e-12)) for x, y in zip(a, b, strict=True)
    )


def zoo(name: str, n: int = 64) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    data = load_split(name, "calib")
    feeds = {k: v[:n] for k, v in data.items() if k != "y"}
    return graph.load(model_path(name)), feeds


def io_signature(model: onnx.ModelProto) -> list[tuple[str, str]]:
    inits = {i.name for i in model.graph.initializer}
    ios = [i for i in model.graph.input if i.name not in inits] + list(model.graph.output)
    return [(vi.name, str(vi.type).replace("\n", " ")) for vi in ios]


def padded_convnet(seed: int = 0) -> onnx.ModelProto:
    """x[N,3,H,W] -> Conv3x3(pad 1) -> Relu -> Conv3x3(pad 1) -> Relu -> GAP -> Flatten -> Gemm,
    with symbolic H and W: constants entering the second conv have border effects."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, *shape):
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 6, 8, 3, 3), init("b2", 6),
             init("w3", 4, 6), init("b3", 4)]  # fmt: skip
    pad = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **pad),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **pad),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "padded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model  # newest IR stamp: onnxruntime may not read it (runtime.session copes)
