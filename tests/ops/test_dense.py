"""ops.dense: Gemm and MatMul with a constant weight read a cut on their contracted axis and
make fresh units on their last axis; other axes (tokens) are positions; MatMul on another
labelled axis is channel-wise; products of two activations freeze their operands."""

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
    reasons,
    units_of,
)
from scmopt import units
from scmopt.plan import Plan


def gemm_mlp(trans_b: int = 1, alpha: float = 1.0, beta: float = 1.0, bias=(16,), seed: int = 0):
    """x[N,10] -> fc1 Gemm(10->16) -> Relu -> fc2 Gemm(16->12, the attributes under test,
    bias of shape `bias` or none) -> Relu -> fc3 Gemm(12->4) = y."""
    n = Net(seed)
    h = n.op(
        "Relu", [n.op("Gemm", ["x", n.w("w1", 16, 10), n.b("b1", 16)], "fc1", transB=1)], "relu1"
    )
    w2 = n.w("w2", 12, 16) if trans_b else n.w("w2", 16, 12, fan_in=16)
    ins = [h, w2] + ([n.b("b2", *[12 if d == 16 else d for d in bias])] if bias else [])
    g = n.op("Gemm", ins, "fc2", transB=trans_b, alpha=alpha, beta=beta)
    n.op("Gemm", [n.op("Relu", [g], "relu2"), n.w("w3", 4, 12)], "fc3", out="y", transB=1)
    return n.model({"x": ["N", 10]}, {"y": ["N", 4]})


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"trans_b": 0},
        {"alpha": 0.7, "beta": -1.3},
        {"trans_b": 0, "alpha": 2.0, "beta": 0.5},
        {"bias": None},
        {"bias": (1, 16), "beta": 3.0},
        {"bias": (1,), "alpha": 0.5, "beta": 2.0},
    ],
    ids=["transB", "plain", "alpha-beta", "plain-alpha-beta", "no-bias", "bias-1xO", "scalar-C"],
)
def test_gemm_units_and_exact_plans(kw):
    model = gemm_mlp(**kw)
    ug = units.analyze(model)
    for node, c in (("fc1", 16), ("fc2", 12)):
        us = units_of(ug, node)
        assert len(us) == c and all(u.prunable for u in us), reasons(us)
    assert cut_read_by(ug, "fc2").layout.axis == 1 and cut_read_by(ug, "fc2").spatial == ()
    assert not units_of(ug, "fc3")
    check_random_plans(model, feeds_for(model, batch=5))


def test_gemm_slices_its_weight_on_the_right_axis():
    for trans_b in (0, 1):
        model = gemm_mlp(trans_b=trans_b)
        ug = units.analyze(model)
        fc1, fc2 = units_of(ug, "fc1"), units_of(ug, "fc2")
        plan = Plan()
        for u in fc1[:5]:
            plan.set_constant(u.id, {"relu1": 0.3})
        for u in fc2[:2]:
            plan.set_folded(u.id, {"relu2": ({fc2[5].id: 0.5, fc2[7].id: -1.0}, 0.1)})
        compiled = check_plan(ug, plan, feeds_for(model))
        dims = {i.name: tuple(i.dims) for i in compiled.graph.initializer}
        node = {n.name: n for n in compiled.graph.node}
        assert dims[node["fc1"].input[1]] == (11, 10)
        assert dims[node["fc2"].input[1]] == ((10, 11) if trans_b else (11, 10))
        assert dims[node["fc3"].input[1]] == (4, 10)


@pytest.mark.parametrize(
    "attrs, weight, bias, words",
    [
        ({"transA": 1}, (2, 3), None, "non-constant or transposed operands"),
        ({}, "input", None, "non-constant or transposed operands"),
        ({}, (8, 3), (2, 3), "bias that is not a constant vector"),
        ({}, (8, 3), "input", "bias that is not a constant vector"),
    ],
    ids=["transA", "weight-input", "matrix-C", "C-input"],
)
def test_gemm_refusals(attrs, weight, bias, words):
    """fc1's units, read by a plain Gemm and by one that refuses them, freeze with its reason."""
    n = Net(1)
    h = n.op("Relu", [n.op("Gemm", ["x", n.w("w1", 8, 6), n.b("b1", 8)], "fc1", transB=1)], "r")
    n.op("Gemm", [h, n.w("w2", 8, 3)], "side", out="y0")
    inputs = {"x": [2, 6]}
    ins = [h, "wdyn" if weight == "input" else n.w("wq", *weight)]
    if weight == "input":
        inputs["wdyn"] = [8, 3]
    if bias == "input":
        inputs["cdyn"] = [3]
        ins.append("cdyn")
    elif bias is not None:
        ins.append(n.b("cq", *bias))
    n.op("Gemm", ins, "odd", out="y1", **attrs)
    ug = units.analyze(n.model(inputs, {"y0": [2, 3], "y1": None}))
    fc1 = units_of(ug, "fc1")
    assert len(fc1) == 8 and frozen_with(fc1, words, "Gemm 'odd'"), reasons(fc1)


def tokens_mlp(t=5, bias_first: bool = False, seed: int = 0):
    """x[B,T,8] -> MatMul(8->16) + b -> Gelu(Erf form) -> MatMul(16->12) + b -> Relu ->
    MatMul(12->4) = y: the channels live on the last axis, tokens are positions."""
    n = Net(seed)
    h = n.op("MatMul", ["x", n.w("w1", 8, 16)], "fc1")
    h = n.op("Add", [n.b("b1", 16), h] if bias_first else [h, n.b("b1", 16)], "fc1_bias")
    g = n.op("Erf", [n.op("Mul", [h, n.tensor("s", np.float32(0.7071))], "scale")], "erf")
    g = n.op("Mul", [h, n.op("Add", [g, n.tensor("one", np.float32(1.0))], "erf1")], "gelu")
    h2 = n.op("MatMul", [g, n.w("w2", 16, 12)], "fc2")
    h2 = n.op("Add", [n.b("b2", 12), h2] if bias_first else [h2, n.b("b2", 12)], "fc2_bias")
    n.op("MatMul", [n.op("Relu", [h2], "relu2"), n.w("w3", 12, 4)], "fc3", out="y")
    return n.model({"x": ["B", t, 8]}, {"y": ["B", t, 4]})


@pytest.mark.parametrize("bias_first", [False, True], ids=["x+b", "b+x"])
def test_matmul_on_tokens_has_token_positions(bias_first):
    model = tokens_mlp(bias_first=bias_first)
    ug = units.analyze(model)
    for node, c in (("fc1", 16), ("fc2", 12)):
        us = units_of(ug, node)
        assert len(us) == c and all(u.prunable for u in us), reasons(us)
    cut = cut_read_by(ug, "fc2")
    assert cut.tensor == "gelu" and cut.layout.axis == 2 and cut.spatial == (5,)
    assert cut.positions == 5 and cut.rank == 3
    check_random_plans(model, feeds_for(model, batch=2))


def test_matmul_per_token_constants_are_exact():
    model = tokens_mlp()
    ug = units.analyze(model)
    rng = np.random.default_rng(0)
    plan = Plan()
    for u in units_of(ug, "fc1")[:6]:
        plan.set_constant(u.id, {"gelu": rng.normal(size=5)})
    check_plan(ug, plan, feeds_for(model, batch=2))


def test_matmul_on_dynamic_tokens():
    model = tokens_mlp(t="T")
    ug = units.analyze(model)
    assert cut_read_by(ug, "fc2").spatial is None and cut_read_by(ug, "fc2").positions is None
    check_random_plans(model, feeds_for(model, batch=2, T=6))


def test_matmul_rank_2_and_rank_4():
    n = Net(2)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 6, 10)], "fc1")], "relu1")
    n.op("MatMul", [h, n.w("w2", 10, 3)], "fc2", out="y")
    model = n.model({"x": ["N", 6]}, {"y": ["N", 3]})
    assert len(units.analyze(model).prunable) == 10
    check_random_plans(model, feeds_for(model))
    n = Net(3)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 6, 10)], "fc1")], "relu1")
    n.op("MatMul", [h, n.w("w2", 10, 3)], "fc2", out="y")
    model = n.model({"x": ["N", 2, 3, 6]}, {"y": ["N", 2, 3, 3]})
    ug = units.analyze(model)
    assert cut_read_by(ug, "fc2").layout.axis == 3 and cut_read_by(ug, "fc2").spatial == (2, 3)
    check_random_plans(model, feeds_for(model, batch=2))


def test_matmul_on_a_non_last_labelled_axis_is_channel_wise():
    """Conv1d channels on axis 1 of [N, C, L]; MatMul(W[L, L']) mixes positions per channel."""
    n = Net(4)
    c = n.op(
        "Conv", ["x", n.w("w1", 8, 3, 3), n.b("b1", 8)], "conv1", kernel_shape=[3], pads=[1, 1]
    )
    m = n.op("MatMul", [n.op("Relu", [c], "relu1"), n.w("wl", 7, 5)], "mix_positions")
    n.op("Conv", [m, n.w("w2", 4, 8, 1)], "conv2", out="y", kernel_shape=[1])
    model = n.model({"x": ["N", 3, 7]}, {"y": ["N", 4, 5]})
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 8 and all(u.prunable for u in conv1), reasons(conv1)
    assert not units_of(ug, "mix_positions")
    assert "relu1" not in ug.cuts  # channel-wise: not a cut
    cut = cut_read_by(ug, "conv2")
    assert cut.tensor == "mix_positions" and cut.units == [u.id for u in conv1]
    assert cut.spatial == (5,)
    check_random_plans(model, feeds_for(model))


def test_matmul_of_two_activations_freezes_both():
    """Attention scores h @ h^T: the units of h are frozen; h also feeds a dense layer."""
    n = Net(5)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 6, 8)], "proj")], "h")
    ht = n.op("Transpose", [h], "h_t", perm=[0, 2, 1])
    s = n.op("MatMul", [h, ht], "scores")
    n.op("Softmax", [s], "attn", out="y", axis=-1)
    n.op("MatMul", [h, n.w("w2", 8, 3)], "out", out="y2")
    model = n.model({"x": ["B", 4, 6]}, {"y": ["B", 4, 4], "y2": ["B", 4, 3]})
    ug = units.analyze(model)
    proj = units_of(ug, "proj")
    assert len(proj) == 8
    assert frozen_with(proj, "two activations", "MatMul 'scores'"), reasons(proj)


def test_matmul_with_the_weight_first_is_refused_for_what_it_is():
    """W @ h contracts h's second-to-last axis: refused, and not called a product of two
    activations."""
    n = Net(7)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 6, 8)], "fc1")], "h")
    n.op("MatMul", [h, n.w("w2", 8, 3)], "side", out="y0")
    n.op("MatMul", [n.w("wl", 5, 4), h], "left", out="y1")
    model = n.model({"x": ["B", 4, 6]}, {"y0": None, "y1": None})
    fc1 = units_of(units.analyze(model), "fc1")
    assert frozen_with(fc1, "constant first operand", "MatMul 'left'"), reasons(fc1)


def test_matmul_refusals():
    n = Net(6)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 6, 8)], "fc1")], "h")
    n.op("MatMul", [h, n.w("w2", 8, 3)], "side", out="y0")
    n.op("MatMul", [h, n.w("w3", 2, 8, 3)], "batched_weight", out="y1")
    model = n.model({"x": ["B", 2, 6]}, {"y0": None, "y1": None})
    fc1 = units_of(units.analyze(model), "fc1")
    assert frozen_with(fc1, "weight of rank != 2", "'batched_weight'"), reasons(fc1)
