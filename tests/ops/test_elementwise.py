"""ops.elementwise: unary ops pass a layout through; binary ops unify the units of matching
channels (residual Add, squeeze-excite Mul), slice per-channel constants (on axis 1 of NCHW
maps and on the last axis of [B, T, D] tokens) and refuse what they cannot slice."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from onnx import helper

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


def conv(n: Net, x: str, name: str, cin: int, cout: int, k: int = 1, bias: bool = True) -> str:
    ins = [x, n.w(f"{name}.w", cout, cin, k, k)] + ([n.b(f"{name}.b", cout)] if bias else [])
    return n.op("Conv", ins, name, kernel_shape=[k, k], pads=[k // 2] * 4)


UNARY_CHAIN = [
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("LeakyRelu", {"alpha": 0.1}),
    ("Elu", {}),
    ("Softplus", {}),
    ("HardSigmoid", {}),
    ("HardSwish", {}),
    ("Abs", {}),
    ("Neg", {}),
    ("Identity", {}),
    ("Erf", {}),
    ("Sin", {}),
]


def test_unary_ops_pass_units_through():
    n = Net(0)
    cur = conv(n, "x", "conv1", 3, 8)
    for i, (op, attrs) in enumerate(UNARY_CHAIN):
        cur = n.op(op, [cur], f"{op.lower()}_{i}", **attrs)
    cur = n.op(
        "Clip", [cur, n.tensor("lo", np.float32(-0.5)), n.tensor("hi", np.float32(0.8))], "clip"
    )
    cur = n.op("Dropout", [cur], "dropout")
    conv(n, cur, "conv2", 8, 4)
    n.nodes[-1].output[0] = "y"
    model = n.model({"x": ["N", 3, 4, 4]}, {"y": None})
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 8 and all(u.prunable for u in conv1), reasons(conv1)
    assert cut_read_by(ug, "conv2").tensor == "dropout"
    assert all(
        ug.layouts[f"{op.lower()}_{i}"].labels == ug.layouts["conv1"].labels
        for i, (op, _) in enumerate(UNARY_CHAIN)
    )
    check_random_plans(model, feeds_for(model))


def test_unary_refusals():
    """Clip with per-channel bounds; Dropout whose mask output is used."""
    n = Net(1)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 8)], "relu")
    conv(n, r, "side", 8, 2)
    n.nodes[-1].output[0] = "y0"
    n.op("Clip", [r, n.tensor("lo", np.zeros((8, 1, 1), np.float32))], "clip", out="y1")
    n.nodes.append(helper.make_node("Dropout", [r], ["y2", "mask"], name="dropout"))
    model = n.model({"x": ["N", 3, 4, 4]}, {"y0": None, "y1": None, "y2": None, "mask": None})
    ug = units.analyze(model)
    got = reasons(units_of(ug, "conv1"))
    assert sum(got.values()) == 8 and None not in got
    ug1 = units.analyze(_without(model, "dropout", "y2", "mask"))
    assert frozen_with(units_of(ug1, "conv1"), "non-scalar clip bounds", "Clip 'clip'")
    ug2 = units.analyze(_without(model, "clip", "y1"))
    assert frozen_with(units_of(ug2, "conv1"), "unsupported input/output use", "'dropout'")


def _without(model, node: str, *outputs: str):
    m = copy.deepcopy(model)
    keep = [nd for nd in m.graph.node if nd.name != node]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    outs = [o for o in m.graph.output if o.name not in outputs]
    del m.graph.output[:]
    m.graph.output.extend(outs)
    return m


def residual(seed: int = 0):
    """conv1(3->8) -> Relu = a -> conv2(8->8, 3x3) -> Add(a) -> Relu -> conv3(8->8) -> Relu ->
    Add(a) (a second skip) -> conv4(8->2) = y: one residual stream of 8 units."""
    n = Net(seed)
    a = n.op("Relu", [conv(n, "x", "conv1", 3, 8)], "a")
    s = n.op("Relu", [n.op("Add", [conv(n, a, "conv2", 8, 8, 3), a], "add1")], "s")
    t = n.op("Add", [a, n.op("Relu", [conv(n, s, "conv3", 8, 8)], "r3")], "add2")
    conv(n, t, "conv4", 8, 2)
    n.nodes[-1].output[0] = "y"
    return n.model({"x": ["N", 3, 5, 5]}, {"y": None})


def test_residual_add_unifies_the_stream():
    model = residual()
    ug = units.analyze(model)
    stream = units_of(ug, "conv1")
    assert len(stream) == 8 and all(u.prunable for u in stream), reasons(stream)
    for u in stream:
        producers = {p for p, _ in u.producers}
        assert producers == {"conv1", "conv2", "conv3"}, producers
        assert set(u.cuts) == {"a", "s", "add2"}
    assert len({u.group for u in stream}) == 1
    check_random_plans(model, feeds_for(model))


def squeeze_excite(seed: int = 0):
    """conv1(3->8) -> Relu = r; GAP -> conv(8->4) -> Relu -> conv(4->8) -> Sigmoid = gate;
    r * gate -> conv2(8->2) = y."""
    n = Net(seed)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 8)], "r")
    g = n.op("GlobalAveragePool", [r], "gap")
    g = n.op("Relu", [conv(n, g, "se_reduce", 8, 4)], "se_relu")
    g = n.op("Sigmoid", [conv(n, g, "se_expand", 4, 8)], "gate")
    conv(n, n.op("Mul", [r, g], "excite"), "conv2", 8, 2)
    n.nodes[-1].output[0] = "y"
    return n.model({"x": ["N", 3, 5, 5]}, {"y": None})


def test_squeeze_excite_gate_is_coupled_to_its_channels():
    model = squeeze_excite()
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 8 and all(u.prunable for u in conv1), reasons(conv1)
    assert all({p for p, _ in u.producers} == {"conv1", "se_expand"} for u in conv1)
    assert set(conv1[0].cuts) == {"gap", "excite"}
    se = units_of(ug, "se_reduce")
    assert len(se) == 4 and all(u.prunable for u in se)
    check_random_plans(model, feeds_for(model))


NCHW_CONSTANTS = [
    ("Add", (8, 1, 1)),
    ("Mul", (1, 8, 1, 1)),
    ("Sub", (8, 1, 1)),
    ("Div", (8, 1, 1)),
    ("Max", (8, 5, 5)),
    ("Min", ()),
    ("Pow", ()),
]


@pytest.mark.parametrize(
    "op, const_shape, const_first",
    [(op, s, first) for op, s in NCHW_CONSTANTS for first in (False, True)]
    + [("PRelu", (8, 1, 1), False)],  # PRelu's slope is its second input
)
def test_per_channel_constants_on_nchw_are_sliced(op, const_shape, const_first):
    n = Net(2)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 8)], "r")
    if op in ("Div", "Pow"):  # positive operands
        r = n.op("Add", [r, n.tensor("one", np.float32(1.0))], "positive")
        c = n.tensor("c", n.rng.uniform(0.5, 2.0, const_shape).astype(np.float32))
    else:
        c = n.b("c", *const_shape)
    e = n.op(op, [c, r] if const_first else [r, c], "binary")
    conv(n, e, "conv2", 8, 2)
    n.nodes[-1].output[0] = "y"
    model = n.model({"x": ["N", 3, 5, 5]}, {"y": None})
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 8 and all(u.prunable for u in conv1), reasons(conv1)
    ug = units.analyze(model)
    plan = random_plan(ug, seed=1)
    compiled = check_plan(ug, plan, feeds_for(model))
    if np.prod(const_shape) > 1:
        node = next(nd for nd in compiled.graph.node if nd.name == "binary")
        dims = {i.name: tuple(i.dims) for i in compiled.graph.initializer}
        kept = 8 - len(plan.removed & {u.id for u in conv1})
        shape = dims[node.input[0 if const_first else 1]]
        assert kept in shape and 8 not in shape, shape
    check_random_plans(model, feeds_for(model), seeds=[2])


def tokens(const_shape=(16,), op="Mul", seed: int = 0):
    """x[B,5,8] -> MatMul(8->16) -> Relu -> `op` with a constant of `const_shape` -> Add(beta)
    -> MatMul(16->4) = y: per-channel constants on the last axis of [B, T, D]."""
    n = Net(seed)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 8, 16)], "fc1")], "relu")
    h = n.op(op, [h, n.b("gamma", *const_shape)], "scale")
    h = n.op("Add", [n.b("beta", 16), h], "shift")
    n.op("MatMul", [h, n.w("w2", 16, 4)], "fc2", out="y")
    return n.model({"x": ["B", 5, 8]}, {"y": ["B", 5, 4]})


@pytest.mark.parametrize("const_shape", [(16,), (1, 16), (5, 16), (5, 1), (1, 5, 1)])
def test_per_channel_constants_on_the_last_axis_of_tokens(const_shape):
    model = tokens(const_shape)
    ug = units.analyze(model)
    fc1 = units_of(ug, "fc1")
    assert len(fc1) == 16 and all(u.prunable for u in fc1), reasons(fc1)
    cut = cut_read_by(ug, "fc2")
    assert cut.tensor == "shift" and cut.layout.axis == 2
    plan = random_plan(ug, seed=3)
    compiled = check_plan(ug, plan, feeds_for(model, batch=2))
    kept = 16 - len(plan.removed)
    dims = {i.name: tuple(i.dims) for i in compiled.graph.initializer}
    node = {nd.name: nd for nd in compiled.graph.node}
    assert dims[node["shift"].input[0]] == (kept,)
    want = tuple(kept if d == 16 else d for d in const_shape)
    assert dims[node["scale"].input[1]] == want
    check_random_plans(model, feeds_for(model, batch=2), seeds=[4])


def test_variadic_sum_and_mean_unify_all_operands():
    n = Net(4)
    a = n.op("Relu", [n.op("MatMul", ["x", n.w("wa", 6, 8)], "fa")], "ra")
    b = n.op("Relu", [n.op("MatMul", ["x", n.w("wb", 6, 8)], "fb")], "rb")
    c = n.op("MatMul", ["x", n.w("wc", 6, 8)], "fc")
    s = n.op("Sum", [a, b, c, n.b("bias", 8)], "sum")
    m = n.op("Mean", [s, a], "mean")
    n.op("MatMul", [m, n.w("wo", 8, 3)], "out", out="y")
    model = n.model({"x": ["N", 6]}, {"y": ["N", 3]})
    ug = units.analyze(model)
    us = units_of(ug, "fa")
    assert len(us) == 8 and all({p for p, _ in u.producers} == {"fa", "fb", "fc"} for u in us)
    check_random_plans(model, feeds_for(model))


def test_binary_refusals_and_freezes():
    n = Net(5)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 4)], "r")
    conv(n, r, "side", 4, 2)
    n.nodes[-1].output[0] = "y0"
    n.op("Add", [r, "other"], "with_input", out="y1")  # an unsliceable tensor: freeze
    model = n.model({"x": ["N", 3, 4, 4], "other": ["N", 4, 4, 4]}, {"y0": None, "y1": None})
    conv1 = units_of(units.analyze(model), "conv1")
    assert len(conv1) == 4
    assert frozen_with(conv1, "combined with unsliceable tensor 'other' at 'with_input'")

    n = Net(6)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 4)], "r")
    conv(n, r, "side", 4, 2)
    n.nodes[-1].output[0] = "y0"
    t = n.op(
        "Transpose", [n.op("Relu", [conv(n, "x", "conv2", 3, 4)], "r2")], "t", perm=[0, 2, 1, 3]
    )
    n.op("Add", [r, t], "mixed", out="y1")
    conv(n, t, "after", 4, 2)  # reads the transposed map on axis 1: refused too
    n.nodes[-1].output[0] = "y2"
    model = n.model({"x": ["N", 3, 4, 4]}, {"y0": None, "y1": None, "y2": None})
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")
    assert frozen_with(conv1, "different channel layouts", "Add 'mixed'"), reasons(conv1)

    n = Net(7)  # a single channel broadcast against a per-channel constant
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 1)], "r")
    conv(n, r, "side", 1, 2)
    n.nodes[-1].output[0] = "y0"
    n.op("Mul", [r, n.b("c", 1, 4, 1, 1)], "spread", out="y1")
    conv1 = units_of(
        units.analyze(n.model({"x": ["N", 3, 4, 4]}, {"y0": None, "y1": None})), "conv1"
    )
    assert frozen_with(conv1, "operand broadcasts across channels", "Mul 'spread'")
