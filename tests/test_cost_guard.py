"""compiler.cost_guard: a compiled plan is never larger than the original (issue 13 item 2)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from scmopt import units
from scmopt.compiler.compile import compile_plan
from scmopt.compiler.cost_guard import never_larger
from scmopt.ops.cost import model_cost
from scmopt.plan import Plan
from scmopt.runtime.hooks import simulate
from scmopt.runtime.sessions import session


def _model(hw: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    inits = [init("w1", (4, 3, 3, 3)), init("b1", (4,)), init("w2", (8, 4, 3, 3)),
             init("b2", (8,)), init("w3", (10, 8)), init("b3", (10,))]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _count(feeds):
    return lambda compiled: model_cost(compiled.model, feeds)


def test_a_per_position_constant_that_costs_more_than_it_saves_is_re_encoded():
    ug = units.analyze(_model())
    x = {"x": np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    before = model_cost(ug.model, x)
    offsets = np.linspace(0.0, 1.0, 256)  # one value per position of the 16 x 16 map
    plan = Plan().set_constant("conv1:0", {"r1": offsets})
    naive = model_cost(compile_plan(ug, plan).model, x)
    assert naive.params > before.params  # the exact [8, 16, 16] map costs 2,048 parameters
    guarded = never_larger(ug, plan, before, _count(x))
    assert guarded.cost.params <= before.params and guarded.cost.flops <= before.flops
    assert any("per-channel" in n for n in guarded.notes)
    assert "conv1:0" in guarded.plan.actions  # re-encoded, not re-kept
    ref = session(simulate(ug, guarded.plan)).run(None, x)[0]
    got = session(guarded.compiled.model).run(None, x)[0]
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_a_plan_that_is_not_larger_is_unchanged():
    ug = units.analyze(_model())
    x = {"x": np.zeros((1, 3, 16, 16), np.float32)}
    plan = Plan().set_constant("conv1:0", {"r1": 0.5}).set_constant("conv2:3", {"f": 0.1})
    guarded = never_larger(ug, plan, model_cost(ug.model, x), _count(x))
    assert guarded.plan is plan and not guarded.notes


def test_an_impossible_budget_is_reported_not_hidden():
    ug = units.analyze(_model(hw=16))
    x = {"x": np.zeros((1, 3, 16, 16), np.float32)}
    before = model_cost(ug.model, x)
    plan = Plan().set_constant("conv1:0", {"r1": np.linspace(0, 1, 256)})
    # a budget below what any plan of this cut reaches: the cheapest change is taken, then
    # the guard says the model stays larger instead of looping or re-keeping for nothing
    tight = type(before)(flops=before.flops, params=before.params - 10_000)
    guarded = never_larger(ug, plan, tight, _count(x))
    assert guarded.notes[0].startswith("cut 'r1': offsets made per-channel")
    assert "stays larger" in guarded.notes[-1]
    assert guarded.plan.actions["conv1:0"].at["r1"].offset.size == 1
