"""scmopt.io.shapes: static inference, one onnxruntime run for the rest, never an exception."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cost import _unknown_shape_model

from scmopt.io import shapes as shp
from scmopt.runtime import sessions


def _mlp(batch=1, x_shape=True) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4] if x_shape else None)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_static_shapes_need_no_run(monkeypatch):
    def no_session(*args, **kwargs):
        raise AssertionError("no onnxruntime run expected")

    monkeypatch.setattr(sessions, "session", no_session)
    s = shp.resolve_shapes(_mlp("N"))
    assert s.dims["h"] == (1, 3) and s.dims["y"] == (1, 3) and s.dims["w"] == (4, 3)
    assert not s.measured and s.note is None and s.feeds == {"x": (1, 4)}


def test_unknown_shapes_are_measured_in_one_run(monkeypatch):
    calls = []
    real = sessions.session

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sessions, "session", counting)
    m = _unknown_shape_model()
    before = m.SerializeToString()
    s = shp.resolve_shapes(m)
    assert len(calls) == 1
    assert s.dims["d"] == (1, 4, 4, 4) and s.dims["f"] == (1, 64) and s.known("d")
    assert {"c2", "d", "r", "f"} <= s.measured and "conv1" not in s.measured
    assert m.SerializeToString() == before  # the caller's model is untouched


def test_onnxruntime_failure_keeps_the_static_shapes():
    s = shp.resolve_shapes(_unknown_shape_model(custom=True))
    assert s.dims["c"] == (1, 3, 4, 4)  # upstream of the custom op: static inference
    assert not s.known("d") and not s.measured
    assert s.note.startswith("onnxruntime could not run the model")


def test_shape_inference_failure_is_a_note(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    s = shp.resolve_shapes(_mlp("N"))
    # the onnxruntime run still gives every node output's shape
    assert s.dims["h"] == (1, 3) and s.measured == {"h", "y"}
    assert s.note == "onnx shape inference failed (ValueError)"


def test_input_without_shape_needs_a_sample():
    m = _mlp(x_shape=False)
    s = shp.resolve_shapes(m)
    assert not s.known("h") and "no sample" in s.note
    s = shp.resolve_shapes(m, {"x": np.ones((7, 4), np.float64)})  # cast to float32
    assert s.dims["h"] == (1, 3) and s.feeds == {"x": (1, 4)} and s.note is None


def test_sample_feeds_cut_to_one_sample_or_the_fixed_batch():
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    assert shp.sample_feeds(_mlp("N"), {"x": x})["x"].shape == (1, 4)
    assert shp.sample_feeds(_mlp(3), {"x": x})["x"].shape == (3, 4)
    # fewer samples than the fixed batch: zeros of the right shape and dtype instead
    made = shp.sample_feeds(_mlp(3), {"x": x[:2]})["x"]
    assert made.shape == (3, 4) and made.dtype == np.float32 and not made.any()
    assert shp.resolve_shapes(_mlp(3)).dims["h"] == (3, 3)


def test_non_tensor_input_cannot_be_synthesized():
    m = _mlp("N")
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    m.graph.input.append(seq)
    assert shp.sample_feeds(m) is None


@pytest.mark.parametrize("sample", [None, {"x": np.ones((2, 2, 4, 4), np.float32)}])
def test_shapes_inside_subgraphs_are_left_alone(sample):
    """A Loop body's tensors are not main-graph tensors: no error, nothing measured there."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Relu", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
    )  # fmt: skip
    trip = numpy_helper.from_array(np.array(2, np.int64), "trip")
    cond = numpy_helper.from_array(np.array(True), "cond")
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [trip, cond],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    s = shp.resolve_shapes(m, sample)
    assert s.dims["y"] == (1, 2, 4, 4) and "v_out" not in s.dims
