"""The sparse plan hook (runtime.hooks: only the replaced rows, gathered from their parents and
scattered back) computes what the dense M @ X + B hook computes, as constants (simulate, the
reference semantics) and as inputs (the analysis runner), and the identity feeds give the
original network's outputs (to float rounding: onnxruntime fuses differently around hooks).
The zoo's cuts are below SPARSE_CHANNELS, so the tests lower it to 0; that the sparse form is
chosen only from it on is checked on a wide fixture."""

from __future__ import annotations

import pytest
from helpers import outputs, relative_error, zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plans import random_plan

from scmopt.analysis.measure import Runner
from scmopt.runtime import hooks
from scmopt.units import analysis as units

MODELS = ["mlp_digits", "cnn_digits", "resnet_digits", "mobile_digits", "vit_digits",
          "text_encoder"]  # fmt: skip


@pytest.fixture(autouse=True)
def _sparse_everywhere(monkeypatch):
    """The zoo's cuts are narrower than SPARSE_CHANNELS: make every hook sparse."""
    monkeypatch.setattr(hooks, "SPARSE_CHANNELS", 0)


def _dense(monkeypatch) -> None:
    monkeypatch.setattr(hooks, "SPARSE_OPSET", 10**6)  # every model below it: dense hooks


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(name=st.sampled_from(MODELS), fraction=st.floats(0.05, 0.95),
       fold_prob=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))  # fmt: skip
def test_sparse_simulation_equals_the_dense_one(monkeypatch, name, fraction, fold_prob, seed):
    model, feeds = zoo(name, n=16)
    ug = units.analyze(model)
    plan = random_plan(ug, fraction, seed=seed, fold_prob=fold_prob, per_position_prob=0.3)
    sparse = hooks.simulate(ug, plan)
    assert any(n.op_type == "ScatterElements" for n in sparse.graph.node)
    with monkeypatch.context() as m:
        _dense(m)
        dense = hooks.simulate(ug, plan)
    assert not any(n.op_type == "ScatterElements" for n in dense.graph.node)
    assert relative_error(outputs(sparse, feeds), outputs(dense, feeds)) <= 1e-5


@pytest.mark.parametrize("name", ["cnn_digits", "vit_digits"])
def test_runner_plan_inputs_equal_the_dense_hook(monkeypatch, name):
    model, feeds = zoo(name, n=24)
    ug = units.analyze(model)
    plan = random_plan(ug, 0.5, seed=5, fold_prob=0.7, per_position_prob=0.3)
    sparse = Runner(ug, feeds, device="cpu").network(plan).run(feeds, capture=True)
    with monkeypatch.context() as m:
        _dense(m)
        runner = Runner(ug, feeds, device="cpu")
        assert all("M" in runner.hooked.inputs[t] for t in runner.sites)
        dense = runner.network(plan).run(feeds, capture=True)
    assert relative_error([sparse[0]], [dense[0]]) <= 1e-5
    for t, v in dense[1].items():
        assert relative_error([sparse[1][t]], [v]) <= 1e-5, t


@pytest.mark.parametrize("name", ["resnet_digits", "text_encoder"])
def test_identity_plan_gives_the_original(name):
    model, feeds = zoo(name, n=16)
    ug = units.analyze(model)
    runner = Runner(ug, feeds, device="cpu")
    roles = runner.hooked.inputs[runner.sites[0]]
    assert {"rows", "idx", "coef", "B"} <= set(roles)
    got = runner.network(None).run(feeds)[0]
    assert relative_error([got], [outputs(model, feeds)[0]]) <= 1e-5


def test_only_wide_cuts_get_the_sparse_hook(monkeypatch):
    from models import load_split, model_path
    from scmopt.io import graph

    monkeypatch.setattr(hooks, "SPARSE_CHANNELS", 64)  # cnn_digits: cuts of 16 to 64 channels
    ug = units.analyze(graph.load(model_path("cnn_digits")))
    feeds = {k: v[:4] for k, v in load_split("cnn_digits", "test").items() if k != "y"}
    runner = Runner(ug, feeds, device="cpu")
    for t in runner.sites:
        wide = ug.cuts[t].channels >= 64
        assert ("rows" in runner.hooked.inputs[t]) == wide, t
        assert ("M" in runner.hooked.inputs[t]) != wide, t
    assert {("rows" in runner.hooked.inputs[t]) for t in runner.sites} == {True, False}


def test_search_with_sparse_runner_and_dense_prober():
    """The runner's hooks sparse, the curvature prober's dense (its own plan inputs): a search
    runs and removes the same units as with dense hooks everywhere."""
    from scmopt.analysis.config import SearchConfig
    from scmopt.analysis.search import _Search, search

    model, feeds = zoo("cnn_digits", n=256)
    ug = units.analyze(model)
    s = _Search(ug, feeds, None, SearchConfig(keep=0.5), None)
    assert all("rows" in s.runner.hooked.inputs[t] for t in s.runner.sites)
    assert all("M" in s.prober.inputs[t] for t in s.runner.sites)
    sparse = search(ug, feeds, keep=0.5).plan
    hooks.SPARSE_CHANNELS = 10**6  # restored by the autouse fixture's monkeypatch
    dense = search(ug, feeds, keep=0.5).plan
    assert sorted(sparse.removed) == sorted(dense.removed)
