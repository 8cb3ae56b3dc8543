"""ops.pooling: spatial pools of NCHW maps, reductions over axes other than batch and channel
(keepdims=0 moves the channel axis) and softmax along another axis are channel-wise; over the
channel axis they freeze."""

from __future__ import annotations

import pytest

from ops import (
    Net,
    check_random_plans,
    cut_read_by,
    feeds_for,
    frozen_with,
    reasons,
    units_of,
)
from scmopt import units


def conv(n: Net, x: str, name: str, cin: int, cout: int, k: int = 1) -> str:
    w, b = n.w(f"{name}.w", cout, cin, k, k), n.b(f"{name}.b", cout)
    return n.op("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[k // 2] * 4)


POOLS = [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0}),
    ("LpPool", {"kernel_shape": [2, 2], "p": 2}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
    ("GlobalLpPool", {"p": 3}),
]


@pytest.mark.parametrize("op, attrs", POOLS, ids=[p for p, _ in POOLS])
def test_pools_are_channel_wise(op, attrs):
    """conv1(3->8, 3x3) -> Relu -> pool -> conv2(8->6) -> Relu -> conv3(6->2) = y."""
    n = Net(0)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 8, 3)], "relu")
    p = n.op(op, [r], "pool", **attrs)
    conv(n, n.op("Relu", [conv(n, p, "conv2", 8, 6)], "relu2"), "conv3", 6, 2)
    n.nodes[-1].output[0] = "y"
    model = n.model({"x": ["N", 3, 6, 6]}, {"y": None})
    ug = units.analyze(model)
    us = units_of(ug, "conv1")
    assert len(us) == 8 and all(u.prunable for u in us), reasons(us)
    assert cut_read_by(ug, "conv2").tensor == "pool"
    assert "relu" not in ug.cuts
    check_random_plans(model, feeds_for(model))


def test_pool_refusals():
    n = Net(1)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 4)], "relu")
    conv(n, r, "side", 4, 2)
    n.nodes[-1].output[0] = "y0"
    n.op("MaxPool", [r], "pool", n_out=2, kernel_shape=[2, 2])
    model = n.model({"x": ["N", 3, 4, 4]}, {"y0": None, "pool:0": None, "pool:1": None})
    model.graph.output[2].type.tensor_type.elem_type = 7  # Indices are int64
    us = units_of(units.analyze(model), "conv1")
    assert frozen_with(us, "secondary output in use", "MaxPool 'pool'"), reasons(us)

    n = Net(2)  # channels on the last axis of an NHWC map
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 3, 4)], "dense")], "relu")
    n.op("MatMul", [h, n.w("w2", 4, 2)], "side", out="y0")
    n.op("MaxPool", [h], "pool", out="y1", kernel_shape=[2, 2])
    us = units_of(units.analyze(n.model({"x": ["N", 4, 4, 3]}, {"y0": None, "y1": None})), "dense")
    assert frozen_with(us, "pooling of a tensor whose channels are not on axis 1"), reasons(us)


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2"])
def test_reductions_over_spatial_axes(op, keepdims, opset):
    """conv(3->6) -> Relu -> reduce over H, W -> (keepdims=0: Gemm, else conv)."""
    n = Net(3)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 6, 3)], "relu")
    axes_in = opset >= 18 or op == "ReduceSum"
    extra = [n.ints("axes", [2, -1])] if axes_in else []
    attrs = {} if axes_in else {"axes": [2, -1]}
    p = n.op(op, [r, *extra], "reduce", keepdims=keepdims, **attrs)
    if keepdims:
        conv(n, p, "head", 6, 2)
        n.nodes[-1].output[0] = "y"
    else:
        n.op("Gemm", [p, n.w("wh", 2, 6)], "head", out="y", transB=1)
    model = n.model({"x": ["N", 3, 4, 5]}, {"y": None}, opset=opset)
    ug = units.analyze(model)
    us = units_of(ug, "conv1")
    assert len(us) == 6 and all(u.prunable for u in us), reasons(us)
    assert cut_read_by(ug, "head").tensor == "reduce" and ug.layouts["reduce"].axis == 1
    check_random_plans(model, feeds_for(model))


def test_reduction_over_tokens_moves_the_channel_axis():
    """[B, T, D] -> ReduceMean(axis 1, keepdims 0) -> [B, D]: channels move from 2 to 1."""
    n = Net(4)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")], "relu")
    p = n.op("ReduceMean", [h], "pool", axes=[1], keepdims=0)
    n.op("Gemm", [p, n.w("w2", 3, 6)], "head", out="y", transB=1)
    model = n.model({"x": ["B", 5, 4]}, {"y": None})
    ug = units.analyze(model)
    us = units_of(ug, "fc1")
    assert len(us) == 6 and all(u.prunable for u in us), reasons(us)
    assert ug.layouts["relu"].axis == 2 and ug.layouts["pool"].axis == 1
    check_random_plans(model, feeds_for(model, batch=2))


@pytest.mark.parametrize(
    "attrs, words",
    [
        ({"axes": [1]}, "acts on the batch or channel axis"),
        ({"axes": [0, 2]}, "acts on the batch or channel axis"),
        ({}, "acts on the batch or channel axis"),  # no axes: every axis
    ],
    ids=["channels", "batch", "all"],
)
def test_reduction_refusals(attrs, words):
    n = Net(5)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 4)], "relu")
    conv(n, r, "side", 4, 2)
    n.nodes[-1].output[0] = "y0"
    n.op("ReduceMax", [r], "reduce", out="y1", **attrs)
    us = units_of(units.analyze(n.model({"x": ["N", 3, 4, 4]}, {"y0": None, "y1": None})), "conv1")
    assert frozen_with(us, words, "ReduceMax 'reduce'"), reasons(us)


def test_reduction_of_a_flattened_layout_is_refused():
    n = Net(6)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 4)], "relu")
    f = n.op("Flatten", [r], "flat", axis=1)
    n.op("Gemm", [f, n.w("ws", 2, 64)], "side", out="y0", transB=1)
    n.op(
        "ReduceMean", [n.op("Unsqueeze", [f, n.ints("ax", [2])], "u")], "reduce", out="y1", axes=[2]
    )
    us = units_of(units.analyze(n.model({"x": ["N", 3, 4, 4]}, {"y0": None, "y1": None})), "conv1")
    assert frozen_with(us, "reduction over a flattened layout"), reasons(us)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_over_the_channel_axis_freezes(op):
    n = Net(7)
    h = n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")
    n.op("MatMul", [h, n.w("ws", 6, 2)], "side", out="y0")
    s = n.op(op, [h], "softmax", axis=-1)
    n.op("MatMul", [s, n.w("w2", 6, 3)], "fc2", out="y")
    ug = units.analyze(n.model({"x": ["B", 5, 4]}, {"y": None, "y0": None}))
    us = units_of(ug, "fc1")
    assert len(us) == 6
    assert frozen_with(us, "normalises over the channel axis", f"{op} 'softmax'"), reasons(us)
    assert not ug.prunable


def test_softmax_over_another_axis_is_channel_wise():
    """[B, T, D] softmax over T (axis 1), e.g. attention pooling weights per channel."""
    n = Net(8)
    h = n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")
    s = n.op("Softmax", [h], "softmax", axis=1)
    n.op("MatMul", [s, n.w("w2", 6, 3)], "fc2", out="y")
    model = n.model({"x": ["B", 5, 4]}, {"y": None})
    ug = units.analyze(model)
    us = units_of(ug, "fc1")
    assert len(us) == 6 and all(u.prunable for u in us), reasons(us)
    assert cut_read_by(ug, "fc2").tensor == "softmax"
    check_random_plans(model, feeds_for(model, batch=2))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [1, None], ids=["axis1", "default"])
def test_softmax_before_opset_13_normalises_every_axis_from_its_own(op, axis):
    """Opset < 13 coerces the input to 2-D at `axis` (default 1): on [B, T, D] a softmax
    along axis 1 also normalises over the channels on axis 2, so they freeze."""
    n = Net(9)
    h = n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")
    n.op("MatMul", [h, n.w("ws", 6, 2)], "side", out="y0")
    s = n.op(op, [h], "softmax", **({} if axis is None else {"axis": axis}))
    n.op("MatMul", [s, n.w("w2", 6, 3)], "fc2", out="y")
    ug = units.analyze(n.model({"x": ["B", 5, 4]}, {"y": None, "y0": None}, opset=11))
    us = units_of(ug, "fc1")
    assert len(us) == 6
    assert frozen_with(us, "normalises over the channel axis", f"{op} 'softmax'"), reasons(us)


def test_softmax_before_opset_13_after_the_channel_axis_is_channel_wise():
    """[B, D, T] with channels on axis 1, opset 11 softmax along axis 2 (= over T only)."""
    n = Net(10)
    h = n.op("Transpose", [n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")], "bdt", perm=[0, 2, 1])
    s = n.op("Softmax", [h], "softmax", axis=2)
    t = n.op("Transpose", [s], "btd", perm=[0, 2, 1])
    n.op("MatMul", [t, n.w("w2", 6, 3)], "fc2", out="y")
    model = n.model({"x": ["B", 5, 4]}, {"y": None}, opset=11)
    ug = units.analyze(model)
    us = units_of(ug, "fc1")
    assert len(us) == 6 and all(u.prunable for u in us), reasons(us)
    check_random_plans(model, feeds_for(model, batch=2))
