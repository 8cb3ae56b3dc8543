"""compile(plan) equals the plan's simulation; compile(keep-all) equals the original model.

On every zoo model and on the ONNX "light" model architectures with random weights.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import io_signature, outputs, padded_convnet, relative_error, zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from light import NAMES as LIGHT_NAMES
from light import light_input, light_model
from plans import random_plan

from models import load_manifest
from scmopt import units
from scmopt.compiler.compile import compile_plan
from scmopt.ops import cost
from scmopt.plan import Plan
from scmopt.runtime import hooks as intervene

TOL = 1e-5
ZOO = [e["name"] for e in load_manifest()]
# the big fully connected ones take 20-60 s each to compile and run: slow (CI runs them)
LIGHT = [
    pytest.param(n, marks=pytest.mark.slow) if n in ("vgg19", "bvlc_alexnet", "zfnet512") else n
    for n in LIGHT_NAMES
]


def _check_plan(ug: units.UnitGraph, plan: Plan, feeds: dict, original: onnx.ModelProto) -> None:
    sim = intervene.simulate(ug, plan)
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    assert relative_error(outputs(compiled, feeds), outputs(sim, feeds)) <= TOL
    assert io_signature(compiled) == io_signature(ug.model)
    assert [(o.domain, o.version) for o in compiled.opset_import] == [
        (o.domain, o.version) for o in original.opset_import
    ]
    if plan.actions:
        assert cost.count_flops(compiled) < cost.count_flops(ug.model)
        # per-position constants on convolution inputs cost an exact bias map each, which can
        # outweigh the weights saved; scalar constants and folds always save parameters
        maps = any(
            rep.offset.size > 1 and ug.cuts[t].spatial
            for act in plan.actions.values()
            for t, rep in act.at.items()
        )
        if not maps:
            assert cost.count_params(compiled) < cost.count_params(ug.model)


@pytest.fixture(scope="module", params=ZOO)
def zoo_case(request):
    model, feeds = zoo(request.param)
    return request.param, model, units.analyze(model), feeds


def test_zoo_keep_all_reproduces_original(zoo_case):
    _, model, ug, feeds = zoo_case
    compiled = compile_plan(ug, Plan()).model
    onnx.checker.check_model(compiled, full_check=True)
    assert relative_error(outputs(compiled, feeds), outputs(model, feeds)) <= TOL
    assert io_signature(compiled) == io_signature(model)


def test_zoo_random_half_plan_matches_simulation(zoo_case):
    _, model, ug, feeds = zoo_case
    _check_plan(ug, random_plan(ug, 0.5, seed=3, per_position_prob=0.3), feeds, model)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["mlp_digits", "cnn_digits", "resnet_digits", "mobile_digits"]),
    fraction=st.floats(0.05, 0.95),
    fold_prob=st.floats(0.0, 1.0),
    per_position=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_random_plans_compile_exactly(name, fraction, fold_prob, per_position, seed):
    model, feeds = zoo(name, n=16)
    ug = units.analyze(model)
    plan = random_plan(ug, fraction, seed=seed, fold_prob=fold_prob, per_position_prob=per_position)
    _check_plan(ug, plan, feeds, model)


@pytest.mark.parametrize("name", LIGHT)
def test_light_models(name):
    model = light_model(name)
    feeds = light_input(model)
    ug = units.analyze(model)
    compiled = compile_plan(ug, Plan()).model
    assert relative_error(outputs(compiled, feeds), outputs(model, feeds)) <= TOL
    if ug.prunable:
        _check_plan(ug, random_plan(ug, 0.5, seed=1, per_position_prob=0.0), feeds, model)


PRUNABLE_GOAL = ["resnet50", "vgg19", "squeezenet", "inception_v1", "densenet121"]


@pytest.mark.parametrize("name", PRUNABLE_GOAL)
def test_light_models_are_mostly_prunable(name):
    model = light_model(name)
    assert units.analyze(model).summary()["prunable_fraction"] >= 0.9


@pytest.mark.parametrize("name", ["cnn_digits", "resnet_digits", "mobile_digits", "mlp_digits"])
def test_zoo_models_are_mostly_prunable(name):
    model, _ = zoo(name)
    assert units.analyze(model).summary()["prunable_fraction"] >= 0.9


def test_padded_conv_constant_is_exact_at_the_border():
    """A constant channel into a padded conv: the compiled border equals the simulation."""
    model, feeds = zoo("cnn_digits")
    ug = units.analyze(model)
    conv_cut = next(c for c in ug.cuts.values() if c.spatial and c.block == 1)
    uid = next(u for u in conv_cut.units if ug.units[u].prunable)
    plan = Plan().set_constant(uid, {t: 3.0 for t in ug.units[uid].cuts})
    sim, compiled = intervene.simulate(ug, plan), compile_plan(ug, plan).model
    assert relative_error(outputs(compiled, feeds), outputs(sim, feeds)) <= TOL
    # and the border really differs from a per-channel bias (the test would be vacuous otherwise)
    assert any(n.op_type == "ConstantOfShape" for n in compiled.graph.node)


def test_fold_with_unit_coefficient_equals_duplicate_channel():
    """Folding unit u onto k with coefficient 1 and offset 0 == consumer reading a_k twice."""
    model, feeds = zoo("mlp_digits")
    ug = units.analyze(model)
    cut = next(iter(ug.cuts.values()))
    u, k = cut.units[0], cut.units[1]
    plan = Plan().set_folded(u, {cut.tensor: ({k: 1.0}, 0.0)})
    compiled = compile_plan(ug, plan).model
    gemm = next(n for n in compiled.graph.node if n.input[0] == cut.tensor)
    w = next(
        onnx.numpy_helper.to_array(i) for i in compiled.graph.initializer if i.name == gemm.input[1]
    )
    w0 = next(
        onnx.numpy_helper.to_array(i)
        for i in ug.model.graph.initializer
        if i.name == next(n for n in ug.model.graph.node if n.input[0] == cut.tensor).input[1]
    )
    np.testing.assert_allclose(w[:, 0], w0[:, 0] + w0[:, 1], rtol=1e-6)
    assert w.shape[1] == w0.shape[1] - 1


@pytest.mark.parametrize("side", [5, 8, 13])
def test_dynamic_spatial_shapes_are_exact_at_any_size(side):
    """Constants into padded convs with symbolic H, W: exact borders at any size."""
    ug = units.analyze(padded_convnet())
    assert ug.cuts["r1"].spatial is None
    plan = random_plan(ug, 0.5, seed=5, per_position_prob=0.0)
    assert any(u in plan.removed for u in ug.cuts["r1"].units)
    x = {"x": np.random.default_rng(side).normal(size=(4, 3, side, side)).astype(np.float32)}
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    assert relative_error(outputs(compiled, x), outputs(intervene.simulate(ug, plan), x)) <= TOL
    # the border correction is needed: a per-channel bias alone would differ at the border
    assert any(n.op_type == "ConstantOfShape" for n in compiled.graph.node)
