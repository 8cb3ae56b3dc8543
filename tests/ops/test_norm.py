"""ops.norm: per-channel normalisations (BatchNormalization, InstanceNormalization) are
channel-wise and sliced; LayerNormalization freezes the channels it normalises over and is
channel-wise over other axes; normalisations across channels (LRN, GroupNormalization, ...)
freeze."""

from __future__ import annotations

import numpy as np
import pytest

from ops import (
    Net,
    check_plan,
    check_random_plans,
    cut_read_by,
    feeds_for,
    frozen_with,
    random_plan,
    reasons,
    units_of,
)
from scmopt import units


def conv(n: Net, x: str, name: str, cin: int, cout: int, k: int = 1) -> str:
    w, b = n.w(f"{name}.w", cout, cin, k, k), n.b(f"{name}.b", cout)
    return n.op("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[k // 2] * 4)


def norm_params(n: Net, op: str, c: int) -> list[str]:
    scale = n.tensor(f"{op}.scale", n.rng.uniform(0.5, 1.5, c).astype(np.float32))
    bias = n.b(f"{op}.bias", c)
    if op == "InstanceNormalization":
        return [scale, bias]
    mean = n.b(f"{op}.mean", c)
    var = n.tensor(f"{op}.var", n.rng.uniform(0.5, 2.0, c).astype(np.float32))
    return [scale, bias, mean, var]


def conv_norm_conv(op: str, **attrs):
    """conv1(3->8) -> `op` -> Relu -> conv2(8->6, 3x3) -> Relu -> conv3(6->2) = y."""
    n = Net(0)
    c = conv(n, "x", "conv1", 3, 8, 3)
    b = n.op(op, [c, *norm_params(n, op, 8)], "norm", **attrs)
    r = n.op("Relu", [conv(n, n.op("Relu", [b], "relu1"), "conv2", 8, 6, 3)], "relu2")
    conv(n, r, "conv3", 6, 2)
    n.nodes[-1].output[0] = "y"
    return n.model({"x": ["N", 3, 5, 5]}, {"y": None})


@pytest.mark.parametrize("op", ["BatchNormalization", "InstanceNormalization"])
def test_per_channel_norms_are_channel_wise_and_sliced(op):
    model = conv_norm_conv(op, epsilon=1e-3)
    ug = units.analyze(model)
    us = units_of(ug, "conv1")
    assert len(us) == 8 and all(u.prunable for u in us), reasons(us)
    assert cut_read_by(ug, "conv2").tensor == "relu1"
    plan = random_plan(ug, seed=0)
    compiled = check_plan(ug, plan, feeds_for(model))
    kept = 8 - sum(u.id in plan.removed for u in us)
    norm = next(nd for nd in compiled.graph.node if nd.name == "norm")
    dims = {i.name: tuple(i.dims) for i in compiled.graph.initializer}
    assert all(dims[t] == (kept,) for t in norm.input[1:])
    check_random_plans(model, feeds_for(model))


def test_batch_norm_refusals():
    n = Net(1)
    c = conv(n, "x", "conv1", 3, 4)
    conv(n, c, "side", 4, 2)
    n.nodes[-1].output[0] = "y0"
    params = norm_params(n, "BatchNormalization", 4)
    n.op("BatchNormalization", [c, "gamma", *params[1:]], "dyn_bn", out="y1")
    model = n.model({"x": ["N", 3, 4, 4], "gamma": [4]}, {"y0": None, "y1": None})
    us = units_of(units.analyze(model), "conv1")
    assert frozen_with(us, "non-constant normalisation parameters", "'dyn_bn'"), reasons(us)

    n = Net(2)  # BatchNormalization of [B, T, D] tokens normalises axis 1 (T): not channels
    h = n.op("MatMul", ["x", n.w("w1", 4, 5)], "fc1")
    n.op("MatMul", [h, n.w("w2", 5, 2)], "side", out="y0")
    n.op("BatchNormalization", [h, *norm_params(n, "BatchNormalization", 3)], "bn", out="y1")
    us = units_of(units.analyze(n.model({"x": ["B", 3, 4]}, {"y0": None, "y1": None})), "fc1")
    assert frozen_with(us, "normalisation on a flattened layout", "'bn'"), reasons(us)


def tokens_layer_norm(axis: int = -1, channels_first: bool = False):
    """x[B,5,8] -> MatMul(8->6) -> [Transpose to [B,6,5]] -> LayerNormalization(axis) -> Relu
    -> (Transpose back) -> MatMul(6->3) = y."""
    n = Net(3)
    h = n.op("MatMul", ["x", n.w("w1", 8, 6)], "fc1")
    n.op("MatMul", [h, n.w("ws", 6, 2)], "side", out="y0")  # keeps fc1's channels in a cut
    if channels_first:
        h = n.op("Transpose", [h], "to_bdt", perm=[0, 2, 1])
    r = 3
    normalised = [5, 6, 5][axis % r] if channels_first else [5, 5, 6][axis % r]
    shape = [normalised] if axis % r == r - 1 else [6, 5] if channels_first else [5, 6]
    scale = n.tensor("ln.scale", n.rng.uniform(0.5, 1.5, shape).astype(np.float32))
    ln = n.op("LayerNormalization", [h, scale, n.b("ln.bias", *shape)], "ln", axis=axis)
    ln = n.op("Relu", [ln], "relu")
    if channels_first:
        ln = n.op("Transpose", [ln], "to_btd", perm=[0, 2, 1])
    n.op("MatMul", [ln, n.w("w2", 6, 3)], "fc2", out="y")
    return n.model({"x": ["B", 5, 8]}, {"y": ["B", 5, 3], "y0": ["B", 5, 2]})


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_layer_norm_over_the_channel_axis_freezes(axis):
    ug = units.analyze(tokens_layer_norm(axis))
    us = units_of(ug, "fc1")
    assert len(us) == 6
    assert frozen_with(
        us, "LayerNormalization", "normalises over the hidden axis", "LayerNormalization 'ln'"
    ), reasons(us)
    assert not ug.prunable


def test_layer_norm_over_another_axis_is_channel_wise():
    """Channels on axis 1 of [B, 6, 5], normalised over the last axis (tokens) per channel."""
    model = tokens_layer_norm(-1, channels_first=True)
    ug = units.analyze(model)
    us = units_of(ug, "fc1")
    assert len(us) == 6 and all(u.prunable for u in us), reasons(us)
    assert ug.layouts["ln"].axis == 1 and cut_read_by(ug, "fc2").tensor == "to_btd"
    check_random_plans(model, feeds_for(model, batch=2))


def test_layer_norm_over_spatial_axes_of_a_conv_map():
    """LayerNormalization(axis=2) of [N, C, H, W] normalises each channel over H, W."""
    n = Net(4)
    c = conv(n, "x", "conv1", 3, 6, 3)
    scale = n.tensor("ln.scale", n.rng.uniform(0.5, 1.5, (4, 4)).astype(np.float32))
    ln = n.op("LayerNormalization", [c, scale, n.b("ln.bias", 4, 4)], "ln", axis=2)
    conv(n, n.op("Relu", [ln], "relu"), "conv2", 6, 2)
    n.nodes[-1].output[0] = "y"
    model = n.model({"x": ["N", 3, 4, 4]}, {"y": None})
    ug = units.analyze(model)
    us = units_of(ug, "conv1")
    assert len(us) == 6 and all(u.prunable for u in us), reasons(us)
    check_random_plans(model, feeds_for(model))


@pytest.mark.parametrize(
    "op, attrs, params",
    [
        ("LRN", {"size": 3}, 0),
        ("LpNormalization", {"axis": 1}, 0),
        ("MeanVarianceNormalization", {}, 0),
        ("GroupNormalization", {"num_groups": 2}, 2),
    ],
)
def test_normalisations_across_channels_freeze(op, attrs, params):
    n = Net(5)
    c = n.op("Relu", [conv(n, "x", "conv1", 3, 4, 3)], "relu")
    extra = [n.b(f"p{i}", 4) for i in range(params)]
    r = n.op(op, [c, *extra], "mixer", **attrs)
    conv(n, r, "conv2", 4, 2)
    n.nodes[-1].output[0] = "y"
    conv(n, c, "side", 4, 2)  # keeps conv1's channels in a cut
    n.nodes[-1].output[0] = "y0"
    model = n.model({"x": ["N", 3, 4, 4]}, {"y": None, "y0": None}, opset=21 if params else 17)
    ug = units.analyze(model)
    us = units_of(ug, "conv1")
    assert len(us) == 4 and frozen_with(us, f"{op} normalises across channels", "'mixer'")
    assert not ug.prunable  # the mixer's output channels (when their count is known) too


def test_batch_norm_1d_after_a_dense_layer():
    """Gemm(6->8) -> BatchNormalization over [N, 8] -> Relu -> Gemm(8->3): channel-wise."""
    n = Net(6)
    g = n.op("Gemm", ["x", n.w("w1", 8, 6), n.b("b1", 8)], "fc1", transB=1)
    bn = n.op("BatchNormalization", [g, *norm_params(n, "BatchNormalization", 8)], "bn")
    h = n.op("Relu", [bn], "relu")
    n.op("Gemm", [h, n.w("w2", 3, 8)], "fc2", out="y", transB=1)
    model = n.model({"x": ["N", 6]}, {"y": ["N", 3]})
    ug = units.analyze(model)
    us = units_of(ug, "fc1")
    assert len(us) == 8 and all(u.prunable for u in us), reasons(us)
    check_random_plans(model, feeds_for(model, batch=4))
