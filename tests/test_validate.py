"""Validation on models that run one sample at a time (batch size baked in by the export)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from plans import random_plan
from test_batch import merged_batch_model
from test_curvature import inputs, relu_model

import scmopt
from models import load_split, model_path
from scmopt.compiler.compile import compile_plan
from scmopt.evaluation import validate
from scmopt.io import graph
from scmopt.runtime import sessions
from scmopt.units.analysis import analyze


@pytest.mark.parametrize("plan_seed", [1, 3])
def test_per_sample_iia_equals_the_batched_one(plan_seed, monkeypatch):
    """The same draws on a model run one sample at a time: the same IIA per cut."""
    ug = analyze(relu_model())
    x = inputs(60)
    plan = random_plan(ug, 0.5, seed=plan_seed, fold_prob=1.0)
    comp = compile_plan(ug, plan)
    args = (ug, comp.model, comp.kept_positions, x)
    batched = validate.evaluate_artifact(*args, batch_size=60, seed=3)
    monkeypatch.setattr(sessions, "accepts_batch", lambda *a: False)
    single = validate.evaluate_artifact(*args, batch_size=60, seed=3)
    assert batched.iia_per_cut == single.iia_per_cut and batched.fidelity == single.fidelity
    assert single.risk == pytest.approx(batched.risk, rel=1e-5)
    assert 0.0 < min(batched.iia_per_cut.values()) < 1.0  # the plan is visible to swaps


def test_logits_of_a_baked_batch_model():
    fixed, dyn = merged_batch_model(), relu_model()
    x = inputs(12)
    assert validate.batchable(fixed, x) is None
    # a Reshape to the constant [1, 6] is rewritten to follow the batch (scmopt.io.batch)
    assert validate.batchable(relu_model(fixed_batch=True), x) is not None
    assert validate.batchable(dyn, x) is not None
    np.testing.assert_allclose(validate.logits(fixed, x), validate.logits(dyn, x), rtol=1e-6)


def test_compress_a_baked_batch_model_end_to_end():
    fixed = relu_model(fixed_batch=True)
    res = scmopt.compress(fixed, inputs(64), keep=0.5, seed=0)
    fid = res.report["validation"]
    assert set(fid["iia_per_cut"]) and all(0 <= v <= 1 for v in fid["iia_per_cut"].values())
    assert res.report["compile_max_abs_error"] < 1e-4
    twin = scmopt.compress(relu_model(), inputs(64), keep=0.5, seed=0)
    assert res.report["fidelity"] == twin.report["fidelity"]


@pytest.mark.parametrize("name", ["cnn_digits"])
def test_compress_a_model_exported_with_batch_one(name):
    """Fixed batch 1 at the graph's inputs and outputs (a common export): validation runs it
    with a symbolic batch axis, and gives what the same network with a dynamic batch gives."""
    model = graph.load(model_path(name))
    fixed = onnx.ModelProto.FromString(model.SerializeToString())
    for vi in list(fixed.graph.input) + list(fixed.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    data = {k: v[:256] for k, v in load_split(name, "calib").items()}
    a = scmopt.compress(fixed, data, keep=0.5, seed=0)
    b = scmopt.compress(model, data, keep=0.5, seed=0)
    assert a.plan.to_json() == b.plan.to_json()
    for key in ("agreement", "iia", "risk_plain"):
        assert a.report["validation"][key] == pytest.approx(b.report["validation"][key], abs=1e-9)
    assert [d.dim_value for d in a.model.graph.input[0].type.tensor_type.shape.dim][0] == 1
