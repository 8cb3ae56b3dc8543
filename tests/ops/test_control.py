"""ops.control and the registry's fallbacks: tensors read inside If/Loop/Scan bodies freeze
with the op's name; ops of other domains and ops nobody registered freeze what they touch;
none of them crashes the analysis, `scmopt inspect` or the compiler."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from ops import (
    Net,
    check_random_plans,
    cut_read_by,
    feeds_for,
    frozen_with,
    random_plan,
    reasons,
    units_of,
)
from scmopt import units
from scmopt.cli import main
from scmopt.ops.registry import lookup


def conv(n: Net, x: str, name: str, cin: int, cout: int, k: int = 1) -> str:
    w, b = n.w(f"{name}.w", cout, cin, k, k), n.b(f"{name}.b", cout)
    return n.op("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[k // 2] * 4)


def two_convs(n: Net) -> tuple[str, str]:
    """x[N,3,4,4] -> conv1(3->6) -> Relu = r1 -> conv2(6->5) -> Relu -> GAP -> Flatten -> fc
    (5->4). Returns (r1, fc output)."""
    r1 = n.op("Relu", [conv(n, "x", "conv1", 3, 6, 3)], "r1")
    r2 = n.op("Relu", [conv(n, r1, "conv2", 6, 5)], "r2")
    f = n.op("Flatten", [n.op("GlobalAveragePool", [r2], "gap")], "flat", axis=1)
    return r1, n.op("Gemm", [f, n.w("wfc", 4, 5), n.b("bfc", 4)], "fc", transB=1)


def vi(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def with_if(nested: bool = False):
    """An If on the bool input `flag` whose branches read r1 from the outer scope (ReduceMax /
    ReduceMean over H, W -> [N, 6]); its output feeds a side Gemm added to fc. With `nested`,
    the then-branch reads r1 only inside an inner If (the outer If is named: it is the node
    the analysis sees)."""
    n = Net(0)
    r1, main_out = two_convs(n)
    branches = []
    for op in ("ReduceMax", "ReduceMean"):
        body = helper.make_node(op, [r1], [f"{op}_out"], name=f"{op}_body", axes=[2, 3], keepdims=0)
        branches.append(helper.make_graph([body], op, [], [vi(f"{op}_out", ["N", 6])]))
    if nested:
        inner = helper.make_node(
            "If",
            ["flag"],
            ["inner_out"],
            name="inner_if",
            then_branch=branches[0],
            else_branch=branches[1],
        )
        branches[0] = helper.make_graph([inner], "outer_then", [], [vi("inner_out", ["N", 6])])
    n.nodes.append(
        helper.make_node(
            "If",
            ["flag"],
            ["pooled"],
            name="branch",
            then_branch=branches[0],
            else_branch=branches[1],
        )
    )
    side = n.op("Gemm", ["pooled", n.w("wside", 4, 6)], "side", transB=1)
    n.op("Add", [main_out, side], "sum", out="y")
    return n.model({"x": ["N", 3, 4, 4], "flag": []}, {"y": ["N", 4]})


def _bool_input(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    for i in model.graph.input:
        if i.name == name:
            i.type.tensor_type.elem_type = TensorProto.BOOL
    return model


def with_loop():
    """A Loop (2 trips) whose body reads r1 from the outer scope and emits mean_hw(r1) * (i+1)
    as a scan output [2, N, 6]; ReduceSum over the trips -> side Gemm added to fc."""
    n = Net(1)
    r1, main_out = two_convs(n)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
            helper.make_node("ReduceMean", [r1], ["hw"], name="loop_mean", axes=[2, 3], keepdims=0),
            helper.make_node("Cast", ["i"], ["i_f"], name="loop_cast", to=TensorProto.FLOAT),
            helper.make_node("Add", ["i_f", "one"], ["scale"], name="loop_add"),
            helper.make_node("Mul", ["hw", "scale"], ["scan_out"], name="loop_mul"),
        ],
        "body",
        [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL)],
        [vi("cond_out", [], TensorProto.BOOL), vi("scan_out", ["N", 6])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    trips = n.ints("trips", 2)
    cond = n.tensor("cond", np.array(True))
    n.nodes.append(helper.make_node("Loop", [trips, cond], ["stacked"], name="loop", body=body))
    s = n.op("ReduceSum", ["stacked", n.ints("ax0", [0])], "trip_sum", keepdims=0)
    side = n.op("Gemm", [s, n.w("wside", 4, 6)], "side", transB=1)
    n.op("Add", [main_out, side], "sum", out="y")
    return n.model({"x": ["N", 3, 4, 4]}, {"y": ["N", 4]})


def inspect(tmp_path, model: onnx.ModelProto):
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return CliRunner().invoke(main, ["inspect", str(path)], catch_exceptions=False)


@pytest.mark.parametrize(
    "build, op, name",
    [
        (lambda: _bool_input(with_if(), "flag"), "If", "branch"),
        (lambda: _bool_input(with_if(nested=True), "flag"), "If", "branch"),
        (with_loop, "Loop", "loop"),
    ],
    ids=["if", "nested-if", "loop"],
)
def test_control_flow_freezes_captured_channels(tmp_path, build, op, name):
    model = build()
    onnx.checker.check_model(model, full_check=True)
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")  # read by conv2 and inside the body
    assert len(conv1) == 6
    assert frozen_with(conv1, f"read inside {op} '{name}'"), reasons(conv1)
    conv2 = units_of(ug, "conv2")  # never enters the control flow
    assert len(conv2) == 5 and all(u.prunable for u in conv2), reasons(conv2)
    res = inspect(tmp_path, model)
    assert res.exit_code == 0, res.output
    assert f"read inside {op} '{name}'" in res.output
    # the prunable part still compiles exactly (both branches of the If)
    feeds = feeds_for(model) if op == "Loop" else {**feeds_for(model), "flag": np.array(True)}
    check_random_plans(model, feeds, seeds=[0])
    if op == "If":
        check_random_plans(model, {**feeds, "flag": np.array(False)}, seeds=[1])


def test_control_flow_output_channels_are_frozen():
    """The If output read by the side Gemm: its channels come from an op we cannot slice."""
    ug = units.analyze(_bool_input(with_if(), "flag"))
    cut = cut_read_by(ug, "side")
    us = [ug.units[u] for u in cut.units]
    assert len(us) == 6 and frozen_with(us, "channels come from If 'branch'"), reasons(us)


def custom_op_net(domain: str = "com.example", op: str = "MyOp"):
    """conv1 -> Relu -> `domain::op` -> conv2 -> ...; r1 also read by conv_side."""
    n = Net(2)
    r1 = n.op("Relu", [conv(n, "x", "conv1", 3, 6, 3)], "r1")
    n.op(op, [r1], "custom", domain=domain, alpha=0.5)
    r2 = n.op("Relu", [conv(n, "custom", "conv2", 6, 5)], "r2")
    conv(n, r2, "conv3", 5, 2)
    n.nodes[-1].output[0] = "y"
    conv(n, r1, "conv_side", 6, 2)
    n.nodes[-1].output[0] = "y_side"
    outs = {"y": ["N", 2, 4, 4], "y_side": ["N", 2, 4, 4]}
    return n.model({"x": ["N", 3, 4, 4]}, outs, domains={domain: 1})


@pytest.mark.parametrize("op", ["MyOp", "Relu"], ids=["unknown-name", "registered-name"])
def test_custom_domain_op_freezes_what_it_touches(tmp_path, op):
    """An op of another domain is not ours even when its name is: it freezes its inputs, its
    output's channels are anonymous and frozen, and the rest stays prunable."""
    model = custom_op_net(op=op)
    assert lookup("com.example", op) is None
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 6
    assert frozen_with(conv1, f"feeds com.example::{op} 'custom'"), reasons(conv1)
    conv2 = units_of(ug, "conv2")
    assert len(conv2) == 5 and all(u.prunable for u in conv2), reasons(conv2)
    behind = [c for c in ug.cuts.values() if "conv2" in c.consumers]  # if its shape is known
    assert all(ug.units[u].frozen for c in behind for u in c.units)
    res = inspect(tmp_path, model)
    assert res.exit_code == 0, res.output
    assert "internal error" not in res.output
    assert f"feeds com.example::{op} 'custom'" in res.output
    assert "units:" in res.output and "prunable" in res.output


def test_explicit_ai_onnx_domain_is_the_default_domain():
    n = Net(3)
    r1 = n.op("Relu", [conv(n, "x", "conv1", 3, 6)], "r1", domain="ai.onnx")
    conv(n, r1, "conv2", 6, 2)
    n.nodes[-1].output[0] = "y"
    ug = units.analyze(n.model({"x": ["N", 3, 4, 4]}, {"y": None}))
    us = units_of(ug, "conv1")
    assert len(us) == 6 and all(u.prunable for u in us), reasons(us)


@pytest.mark.parametrize(
    "op, extra, attrs",
    [
        ("CumSum", ["axis"], {}),
        ("Einsum", [], {"equation": "nchw->nchw"}),
        ("DepthToSpace", [], {"blocksize": 1}),
    ],
)
def test_unregistered_op_freezes_and_the_rest_compiles(tmp_path, op, extra, attrs):
    """An op of the default domain without a handler: its input units freeze with its name,
    its output's channels are anonymous and frozen, downstream layers stay prunable and a
    plan on them compiles exactly."""
    assert lookup("", op) is None
    n = Net(4)
    r1 = n.op("Relu", [conv(n, "x", "conv1", 3, 6, 3)], "r1")
    ins = [r1] + ([n.tensor("axis", np.array(2, np.int64))] if extra else [])
    u = n.op(op, ins, "odd", **attrs)
    r2 = n.op("Relu", [conv(n, u, "conv2", 6, 5)], "r2")
    conv(n, r2, "conv3", 5, 2)
    n.nodes[-1].output[0] = "y"
    conv(n, r1, "conv_side", 6, 2)
    n.nodes[-1].output[0] = "y_side"
    model = n.model({"x": ["N", 3, 4, 4]}, {"y": ["N", 2, 4, 4], "y_side": ["N", 2, 4, 4]})
    ug = units.analyze(model)
    conv1 = units_of(ug, "conv1")
    assert len(conv1) == 6 and frozen_with(conv1, f"feeds {op} 'odd'"), reasons(conv1)
    behind = [ug.units[x] for x in cut_read_by(ug, "conv2").units]
    assert len(behind) == 6 and frozen_with(behind, f"channels come from {op} 'odd'")
    conv2 = units_of(ug, "conv2")
    assert len(conv2) == 5 and all(u.prunable for u in conv2), reasons(conv2)
    assert set(ug.prunable) == {u.id for u in conv2}
    check_random_plans(model, feeds_for(model))
    res = inspect(tmp_path, model)
    assert res.exit_code == 0 and f"feeds {op} 'odd'" in res.output, res.output
    plan = random_plan(ug, seed=0)
    assert plan.removed <= {u.id for u in conv2}
