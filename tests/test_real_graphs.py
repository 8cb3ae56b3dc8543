"""Issue 11's acceptance on graphs shaped like other people's exports (tests/graphs.py) and on
the onnx "light" zoo: `scmopt inspect` never fails, channels behind layout ops are units,
foreign ops and control flow freeze what they touch with a reason, fixed-batch models compress,
and random plans on channels-last and transformer graphs compile exactly."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import BUILDERS, sample
from helpers import outputs, relative_error
from light import NAMES as LIGHT_NAMES
from light import light_model
from onnx import shape_inference
from plans import random_plan

import scmopt
from scmopt import units
from scmopt.cli import main
from scmopt.compiler.compile import compile_plan
from scmopt.ops import cost
from scmopt.runtime.hooks import simulate

LIGHT = [pytest.param(n, marks=pytest.mark.slow) if n == "vgg19" else n for n in LIGHT_NAMES]


def inspect(tmp_path, model: onnx.ModelProto, name: str = "model"):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return CliRunner().invoke(main, ["inspect", str(path)], catch_exceptions=False)


def counts(output: str) -> tuple[int, int]:
    """(total, prunable) from inspect's `units: T total, P prunable (...)` line."""
    m = re.search(r"units: (\d+) total, (\d+) prunable", output)
    assert m, output
    return int(m.group(1)), int(m.group(2))


def units_of(ug, node: str) -> list:
    """The units that `node` produces (one per output channel)."""
    return [u for u in ug.units.values() if any(p == node for p, _ in u.producers)]


def cut_read_by(ug, node: str):
    cuts = [c for c in ug.cuts.values() if node in c.consumers]
    assert len(cuts) == 1, f"{node} reads {len(cuts)} cuts: {sorted(ug.cuts)}"
    return cuts[0]


def unit_ids(cut) -> set[str]:
    return set(np.asarray(cut.units).ravel().tolist())


def reasons(us) -> dict[str | None, int]:
    """How many of `us` are frozen for each reason (None: prunable)."""
    return dict(Counter(u.frozen for u in us))


def where(ug) -> dict[str, int]:
    """Units per producer (or anonymous tensor), for failure messages."""
    return dict(Counter(u.id.rsplit(":", 1)[0] for u in ug.units.values()))


# --- the fixtures are what they claim ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fixture_is_valid_and_runs(name):
    model = BUILDERS[name]()
    onnx.checker.check_model(model, full_check=True)
    if name == "custom_domain_op":  # no kernel for com.example::MyOp
        assert {o.domain for o in model.opset_import} == {"", "com.example"}
        return
    batch = 1 if name.startswith("fixed_batch") else 4
    feeds = sample(model, batch, seed=1)
    (y,) = outputs(model, feeds)
    assert y.shape[0] == batch and np.isfinite(y).all()
    assert 0.05 < float(y.std()) < 10, f"activations not O(1): std {y.std():.3g}"
    if name == "with_if":  # both branches run and differ
        feeds["use_max"] = np.asarray(not bool(feeds["use_max"]))
        (y2,) = outputs(model, feeds)
        assert np.abs(y2 - y).max() > 1e-2


def test_unknown_shapes_fixture_defeats_shape_inference():
    inferred = shape_inference.infer_shapes(BUILDERS["unknown_shapes"](), data_prop=True)
    shapes = {vi.name: vi.type.tensor_type.shape.dim for vi in inferred.graph.value_info}
    for t in ("view1", "flatten"):  # the inputs of Conv conv2 and MatMul fc1
        assert not any(d.HasField("dim_value") for d in shapes[t]), (t, shapes[t])


# --- inspect never fails -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_inspect_exits_0(tmp_path, name):
    res = inspect(tmp_path, BUILDERS[name](), name)
    assert res.exit_code == 0, res.output
    assert "internal error" not in res.output
    total, prunable = counts(res.output)
    assert total >= prunable >= 0


@pytest.mark.parametrize("name", LIGHT)
def test_inspect_exits_0_on_light_zoo(tmp_path, name):
    model = light_model(name)
    res = inspect(tmp_path, model, name)
    assert res.exit_code == 0, res.output
    params = re.search(r"([\d,]+) parameters", res.output)
    assert params, res.output  # canonicalisation may fold a few scalar constants away
    assert abs(int(params.group(1).replace(",", "")) - cost.count_params(model)) <= 16
    flops = re.search(r"([\d,]+) FLOPs/sample", res.output)
    assert flops and int(flops.group(1).replace(",", "")) > 10**8, res.output
    total, _ = counts(res.output)
    assert total > 500


def test_constant_weights_params_flops_and_units(tmp_path):
    model = BUILDERS["constant_weights"]()
    assert not model.graph.initializer
    res = inspect(tmp_path, model)
    assert res.exit_code == 0, res.output
    assert "1,290 parameters" in res.output and "138,480 FLOPs" in res.output
    ug = units.analyze(model)
    for node, n in (("p2o.Conv.0", 8), ("p2o.Conv.1", 12)):
        us = units_of(ug, node)
        assert len(us) == n and all(u.prunable for u in us), (node, reasons(us))


def test_unknown_shapes_costs_come_from_real_shapes(tmp_path):
    """conv1 13,824 + conv2 27,648 + fc1 96 + fc2 160 MACs = 83,456 FLOPs per sample."""
    res = inspect(tmp_path, BUILDERS["unknown_shapes"]())
    assert res.exit_code == 0, res.output
    assert "83,456 FLOPs/sample" in res.output, res.output
    ug = units.analyze(BUILDERS["unknown_shapes"]())
    fc1 = units_of(ug, "fc1")
    assert len(fc1) == 16 and all(u.prunable for u in fc1), reasons(fc1)


# --- layouts: channels-last heads and NHWC stacks ------------------------------------------


@pytest.mark.parametrize("flatten", [False, True], ids=["reshape", "flatten"])
def test_channels_last_head_channels_are_units(tmp_path, flatten):
    model = BUILDERS["channels_last_head"](flatten=flatten)
    ug = units.analyze(model)
    conv2 = units_of(ug, "conv2")
    assert len(conv2) == 6, (where(ug), reasons(ug.units.values()))
    assert all(u.prunable for u in conv2), reasons(conv2)
    assert unit_ids(cut_read_by(ug, "fc1")) == {u.id for u in conv2}
    for node, n in (("conv1", 8), ("fc1", 16)):
        us = units_of(ug, node)
        assert len(us) == n and all(u.prunable for u in us), (node, reasons(us))
    res = inspect(tmp_path, model)
    assert res.exit_code == 0, res.output
    assert counts(res.output)[1] == 8 + 6 + 16, res.output


def test_nhwc_conv_stack_channels_are_units():
    ug = units.analyze(BUILDERS["nhwc_conv_stack"]())
    for node, n in (("conv1", 8), ("conv2", 8), ("conv3", 6)):
        us = units_of(ug, node)
        assert len(us) == n, (node, where(ug), reasons(ug.units.values()))
        assert all(u.prunable for u in us), (node, reasons(us))
    assert unit_ids(cut_read_by(ug, "dense")) == {u.id for u in units_of(ug, "conv3")}


# --- transformers -----------------------------------------------------------------------------


def test_transformer_ffn_neurons_prunable_residual_frozen_by_layernorm():
    ug = units.analyze(BUILDERS["transformer_ffn"]())
    ffn = units_of(ug, "ffn_in")
    assert len(ffn) == 32, (where(ug), reasons(ug.units.values()))
    assert len(ffn) == 32 and all(u.prunable for u in ffn), reasons(ffn)
    assert unit_ids(cut_read_by(ug, "ffn_out")) == {u.id for u in ffn}
    head = unit_ids(cut_read_by(ug, "head"))
    assert len(head) == 16
    residual = [ug.units[u] for u in head] + [
        u for u in units_of(ug, "ffn_out") if u.id not in head
    ]
    assert all(u.frozen and "LayerNormalization" in u.frozen for u in residual), reasons(residual)


# --- foreign ops and control flow freeze what they touch ---------------------------------


def test_custom_domain_op_freezes_what_it_touches():
    ug = units.analyze(BUILDERS["custom_domain_op"]())
    conv1 = units_of(ug, "conv1")  # read by MyOp and by the side Gemm
    assert len(conv1) == 8, where(ug)
    assert all(u.frozen and "MyOp" in u.frozen for u in conv1), reasons(conv1)
    behind = [c for c in ug.cuts.values() if "conv2" in c.consumers]  # MyOp's output, if known
    for u in (ug.units[i] for c in behind for i in unit_ids(c)):
        assert u.frozen and "MyOp" in u.frozen, u


@pytest.mark.parametrize("name, op", [("with_if", "If"), ("with_loop", "Loop")])
def test_control_flow_freezes_captured_channels(name, op):
    ug = units.analyze(BUILDERS[name]())
    conv1 = units_of(ug, "conv1")  # read by conv2 and inside the subgraph
    assert len(conv1) == 8, where(ug)
    assert all(u.frozen and op in u.frozen for u in conv1), reasons(conv1)
    conv2 = units_of(ug, "conv2")  # never enters the control flow
    assert len(conv2) == 6 and all(u.prunable for u in conv2), reasons(conv2)


# --- fixed batch -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fixed_batch_reshape", "fixed_batch_shape_chain"])
def test_fixed_batch_compresses_and_compiles_exactly(name):
    model = BUILDERS[name]()
    (x,) = [i.name for i in model.graph.input]
    result = scmopt.compress(model, {x: sample(model, 32, seed=1)[x]}, keep=0.5)
    prunable = len(result.unit_graph.prunable)
    assert prunable == 8 + 16
    assert abs(len(result.plan.removed) - prunable / 2) <= 1, result.plan.counts()
    rep = result.report
    assert rep["params"]["after"] < rep["params"]["before"]
    dims = result.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 8, 8]
    batches = [1] + ([4] if not dims[0].HasField("dim_value") or dims[0].dim_value != 1 else [])
    sim = simulate(result.unit_graph, result.plan)
    for batch in batches:
        for seed in range(3 if batch == 1 else 1):
            feeds = sample(model, batch, seed=10 + seed)
            err = relative_error(outputs(result.model, feeds), outputs(sim, feeds))
            assert err <= 1e-5, (batch, seed, err)


# --- random plans compile exactly ------------------------------------------------------------

# cases: (builder, kwargs, {producer node: removed units a plan must include})
EXACT = {
    "channels_last_head-reshape": ("channels_last_head", {}, {"conv1": 2, "conv2": 2, "fc1": 4}),
    "channels_last_head-flatten": (
        "channels_last_head",
        {"flatten": True},
        {"conv1": 2, "conv2": 2, "fc1": 4},
    ),
    "transformer_ffn": ("transformer_ffn", {}, {"ffn_in": 12}),
    "nhwc_conv_stack": ("nhwc_conv_stack", {}, {"conv1": 2, "conv2": 2, "conv3": 2}),
    "constant_weights": ("constant_weights", {}, {"p2o.Conv.0": 2, "p2o.Conv.1": 3}),
}


def covering_plan(ug, need: dict[str, int], fraction: float = 0.5):
    """The first seeded random constant plan (tests/plans.py) that removes at least `need[n]`
    units of every node n."""
    for seed in range(30):
        plan = random_plan(ug, fraction, seed=seed, fold_prob=0.0)
        got = {n: sum(u.id in plan.removed for u in units_of(ug, n)) for n in need}
        if all(got[n] >= k for n, k in need.items()):
            return plan
    prunable = {n: sum(u.prunable for u in units_of(ug, n)) for n in need}
    raise AssertionError(f"no random plan removes {need}; prunable units per node: {prunable}")


@pytest.mark.parametrize("case", sorted(EXACT))
def test_random_constant_plans_compile_exactly(case):
    name, kwargs, need = EXACT[case]
    model = BUILDERS[name](**kwargs)
    ug = units.analyze(model)
    plan = covering_plan(ug, need)
    assert plan.counts()["constant"] == len(plan.removed) >= 0.4 * len(ug.prunable)
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    assert cost.count_params(compiled) < cost.count_params(ug.model)
    feeds = sample(model, 8, seed=3)
    sim = outputs(simulate(ug, plan), feeds)
    assert relative_error(sim, outputs(model, feeds)) > 1e-3  # the plan does change the output
    err = relative_error(outputs(compiled, feeds), sim)
    assert err <= 1e-5, err
