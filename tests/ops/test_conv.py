"""ops.conv: group-1 convolutions read a cut and make fresh units, depthwise convolutions are
channel-wise, grouped ones freeze; plans compile exactly, borders of padded convs included."""

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
    relative_error,
    run,
    units_of,
)
from scmopt import units
from scmopt.plan import Plan
from scmopt.runtime.hooks import simulate

PAD = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}


def two_convs(spatial=(6, 6), second: dict | None = None, seed: int = 0):
    """x[N,3,H,W] -> conv1(3->8, 3x3 pad 1) -> Relu -> conv2(8->6, `second` attrs) -> Relu ->
    conv3(6->2, 1x1) = y."""
    n = Net(seed)
    attrs = second or PAD
    k = attrs.get("kernel_shape", [3, 3])
    r1 = n.op(
        "Relu", [n.op("Conv", ["x", n.w("w1", 8, 3, 3, 3), n.b("b1", 8)], "conv1", **PAD)], "relu1"
    )
    c2 = n.op("Conv", [r1, n.w("w2", 6, 8, *k), n.b("b2", 6)], "conv2", **attrs)
    r2 = n.op("Relu", [c2], "relu2")
    n.op("Conv", [r2, n.w("w3", 2, 6, 1, 1)], "conv3", out="y", kernel_shape=[1, 1])
    return n.model({"x": ["N", 3, *spatial]}, {"y": None})


def test_group_1_convs_make_prunable_units():
    ug = units.analyze(two_convs())
    for node, c in (("conv1", 8), ("conv2", 6)):
        us = units_of(ug, node)
        assert len(us) == c and all(u.prunable for u in us), reasons(us)
    assert not units_of(ug, "conv3"), "graph outputs are outcomes, not units"
    assert "x" not in ug.cuts, "graph inputs are exogenous, not units"
    cut = cut_read_by(ug, "conv2")
    assert cut.tensor == "relu1" and cut.layout.axis == 1 and cut.spatial == (6, 6)
    assert cut.units == [u.id for u in units_of(ug, "conv1")]


@pytest.mark.parametrize(
    "second",
    [
        PAD,
        {"kernel_shape": [1, 1]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2]},
        {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER"},
        {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 2, 2, 2]},
        {"kernel_shape": [3, 3], "auto_pad": "VALID"},
    ],
    ids=["pad1", "1x1", "stride2-asym", "same_upper-s2", "same_lower", "dilated", "valid"],
)
def test_random_plans_compile_exactly(second):
    model = two_convs((7, 6), second)
    check_random_plans(model, feeds_for(model))


BORDERS = [
    PAD,
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 2, 1]},
    {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"kernel_shape": [3, 3], "dilations": [2, 1], "pads": [2, 1, 2, 1]},
]


@pytest.mark.parametrize("second", BORDERS, ids=["pad1", "stride2-asym", "same_upper", "dilated"])
@pytest.mark.parametrize("spatial", [(6, 7), ("H", "W")], ids=["static", "dynamic"])
def test_constant_channels_into_a_padded_conv_are_border_exact(spatial, second):
    """Constant channels entering a zero-padded 3x3 conv contribute less at the border than
    inside: the compiled Conv(ones, V) term reproduces that, for static and dynamic H, W."""
    model = two_convs(spatial, second)
    ug = units.analyze(model)
    assert (ug.cuts["relu1"].spatial is None) == (spatial == ("H", "W"))
    conv1 = [u.id for u in units_of(ug, "conv1")]
    plan = Plan()
    for i, u in enumerate(conv1[:5]):
        plan.set_constant(u, {"relu1": 1.0 + i})
    compiled = check_plan(ug, plan, feeds_for(model, H=6, W=7))
    assert any(n.name.endswith("__border") for n in compiled.graph.node)
    if spatial == ("H", "W"):  # the same compiled model is exact at other sizes too
        sim = simulate(ug, plan)
        for h, w in ((4, 9), (5, 5), (1, 2)):
            other = feeds_for(model, H=h, W=w, seed=h)
            assert relative_error(run(compiled, other), run(sim, other)) <= 1e-5, (h, w)


@pytest.mark.parametrize("spatial", [(9,), (4, 3, 5), ("L",)], ids=["1d", "3d", "1d-dynamic"])
def test_1d_and_3d_convs_compile_exactly(spatial):
    """Conv1d (audio, sequences) and Conv3d: the same absorption, kernels of any rank."""
    nd = len(spatial)
    pads = {"kernel_shape": [3] * nd, "pads": [1] * 2 * nd}
    n = Net(5)
    c1 = n.op("Conv", ["x", n.w("w1", 8, 3, *[3] * nd), n.b("b1", 8)], "conv1", **pads)
    c2 = n.op(
        "Conv",
        [n.op("Relu", [c1], "relu1"), n.w("w2", 6, 8, *[3] * nd), n.b("b2", 6)],
        "conv2",
        **pads,
    )
    n.op(
        "Conv",
        [n.op("Relu", [c2], "relu2"), n.w("w3", 2, 6, *[1] * nd)],
        "conv3",
        out="y",
        kernel_shape=[1] * nd,
    )
    model = n.model({"x": ["N", 3, *spatial]}, {"y": None})
    check_random_plans(model, feeds_for(model, L=7))


def test_constants_into_an_unpadded_conv_become_a_bias():
    model = two_convs((6, 6), {"kernel_shape": [3, 3]})
    ug = units.analyze(model)
    plan = Plan().set_constant(units_of(ug, "conv1")[0].id, {"relu1": 2.0})
    compiled = check_plan(ug, plan, feeds_for(model))
    assert [n.op_type for n in compiled.graph.node].count("Conv") == 3  # no border conv
    assert not any("Add" == n.op_type for n in compiled.graph.node)


def test_per_position_constants_into_a_padded_conv_add_the_exact_map():
    model = two_convs((5, 6))
    ug = units.analyze(model)
    rng = np.random.default_rng(0)
    plan = Plan()
    for u in units_of(ug, "conv1")[:3]:
        plan.set_constant(u.id, {"relu1": rng.normal(size=30)})
    compiled = check_plan(ug, plan, feeds_for(model))
    assert any("bias_map" in n.name for n in compiled.graph.node)


def test_sliced_producer_and_consumer_shapes():
    model = two_convs()
    ug = units.analyze(model)
    plan = random_plan(ug, seed=0, fraction=0.5)
    compiled = check_plan(ug, plan, feeds_for(model))
    weights = {i.name: tuple(i.dims) for i in compiled.graph.initializer}
    removed1 = sum(u.id in plan.removed for u in units_of(ug, "conv1"))
    removed2 = sum(u.id in plan.removed for u in units_of(ug, "conv2"))
    assert removed1 and removed2
    node = {n.name: n for n in compiled.graph.node}
    assert weights[node["conv1"].input[1]] == (8 - removed1, 3, 3, 3)
    assert weights[node["conv2"].input[1]] == (6 - removed2, 8 - removed1, 3, 3)
    assert weights[node["conv3"].input[1]] == (2, 6 - removed2, 1, 1)


def depthwise(unlabelled: bool = False):
    """conv1(3->8) -> Relu -> dw(8, group 8, 3x3 pad 1) -> Relu -> conv2(8->4) = y; with
    `unlabelled` the depthwise conv reads the graph input x[N,8,H,W] directly."""
    n = Net(1)
    if unlabelled:
        src = "x"
    else:
        src = n.op(
            "Relu",
            [
                n.op(
                    "Conv", ["x", n.w("w1", 8, 3, 1, 1), n.b("b1", 8)], "conv1", kernel_shape=[1, 1]
                )
            ],
            "relu1",
        )
    d = n.op("Conv", [src, n.w("wd", 8, 1, 3, 3), n.b("bd", 8)], "dw", group=8, **PAD)
    r = n.op("Relu", [d], "relu_dw")
    n.op("Conv", [r, n.w("w2", 4, 8, 1, 1)], "conv2", out="y", kernel_shape=[1, 1])
    return n.model({"x": ["N", 8 if unlabelled else 3, 5, 5]}, {"y": None})


def test_depthwise_conv_is_channel_wise():
    model = depthwise()
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 8 and all(u.prunable for u in conv1), reasons(conv1)
    assert not units_of(ug, "dw"), "a depthwise conv passes its input's units through"
    assert cut_read_by(ug, "conv2").units == [u.id for u in conv1]
    assert "relu1" not in ug.cuts  # the depthwise conv is not a linear consumer
    check_random_plans(model, feeds_for(model))


def test_depthwise_slicing_updates_group():
    model = depthwise()
    ug = units.analyze(model)
    conv1 = [u.id for u in units_of(ug, "conv1")]
    plan = Plan().set_constant(conv1[1], {"relu_dw": 0.5}).set_constant(conv1[6], {"relu_dw": -1})
    compiled = check_plan(ug, plan, feeds_for(model))
    dw = next(n for n in compiled.graph.node if n.name == "dw")
    assert next(a.i for a in dw.attribute if a.name == "group") == 6
    wd = next(i for i in compiled.graph.initializer if i.name == dw.input[1])
    assert tuple(wd.dims) == (6, 1, 3, 3)


def test_depthwise_conv_on_a_graph_input_freezes_its_channels():
    ug = units.analyze(depthwise(unlabelled=True))
    us = list(ug.units.values())
    assert len(us) == 8
    assert frozen_with(us, "depthwise conv 'dw' on an unlabelled input"), reasons(us)


def test_grouped_conv_freezes_its_inputs_and_outputs():
    """conv1's channels feed a group-2 conv and a side conv: all frozen, as are the outputs."""
    n = Net(2)
    r1 = n.op(
        "Relu", [n.op("Conv", ["x", n.w("w1", 8, 3, 1, 1)], "conv1", kernel_shape=[1, 1])], "relu1"
    )
    g = n.op("Conv", [r1, n.w("wg", 6, 4, 3, 3)], "grouped", group=2, **PAD)
    r2 = n.op("Relu", [g], "relu2")
    n.op("Conv", [r2, n.w("w3", 4, 6, 1, 1)], "conv3", out="y", kernel_shape=[1, 1])
    n.op("Conv", [r1, n.w("ws", 2, 8, 1, 1)], "side", out="y2", kernel_shape=[1, 1])
    ug = units.analyze(n.model({"x": ["N", 3, 5, 5]}, {"y": None, "y2": None}))
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 8 and frozen_with(conv1, "feeds grouped conv 'grouped'"), reasons(conv1)
    out = units_of(ug, "grouped")
    assert len(out) == 6 and frozen_with(out, "output of grouped conv 'grouped'")
    assert not ug.prunable


def test_conv_with_weights_from_an_input_is_refused():
    """conv1's channels are read by a conv whose weight is a graph input and by a side conv."""
    n = Net(3)
    r1 = n.op(
        "Relu", [n.op("Conv", ["x", n.w("w1", 8, 3, 1, 1)], "conv1", kernel_shape=[1, 1])], "relu1"
    )
    n.op("Conv", [r1, "wdyn"], "dynamic", out="y", kernel_shape=[1, 1])
    n.op("Conv", [r1, n.w("ws", 2, 8, 1, 1)], "side", out="y2", kernel_shape=[1, 1])
    ug = units.analyze(
        n.model({"x": ["N", 3, 4, 4], "wdyn": [2, 8, 1, 1]}, {"y": None, "y2": None})
    )
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 8
    assert frozen_with(conv1, "non-constant weights at Conv 'dynamic'"), reasons(conv1)


def test_conv_reading_channels_on_another_axis_is_refused():
    """A MatMul's units on the last axis of [N, A, B, C] reaching a Conv (which reads axis 1),
    and a dense layer."""
    n = Net(4)
    r = n.op("Relu", [n.op("MatMul", ["x", n.w("wm", 6, 6)], "dense")], "relu")
    n.op("Conv", [r, n.w("wc", 2, 4, 1, 1)], "conv", out="y", kernel_shape=[1, 1])
    n.op("MatMul", [r, n.w("wo", 6, 3)], "head", out="y2")
    ug = units.analyze(n.model({"x": ["N", 4, 5, 6]}, {"y": None, "y2": None}))
    dense = units_of(ug, "dense")
    assert len(dense) == 6
    assert frozen_with(dense, "unexpected input layout at Conv 'conv'"), reasons(dense)
