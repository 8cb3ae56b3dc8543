"""Forward-pass equivalents: each run counts its samples times its graph's share of the FLOPs,
by the stage that asked for it; compress reports them; nothing is counted without a ledger."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from scmopt import api
from scmopt.ops import cost
from scmopt.runtime import sessions, work
from tests import graphs


def two_layers() -> onnx.ModelProto:
    """x[N,8] -> fc1 (8x8) -> Relu -> fc2 (8x24): fc2 holds 3/4 of the MACs."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 24)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]  # fmt: skip
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 24])], [w1, w2],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_share_follows_the_linear_nodes_a_graph_keeps(tmp_path):
    model = two_layers()
    macs = cost.model_cost(model).macs
    assert macs == {"fc1": 64, "fc2": 192}
    ledger = work.Ledger(100, macs)
    assert ledger.share(model) == 1.0
    onnx.save(model, tmp_path / "m.onnx")
    onnx.utils.extract_model(str(tmp_path / "m.onnx"), str(tmp_path / "tail.onnx"), ["r"], ["y"])
    assert ledger.share(onnx.load(tmp_path / "tail.onnx")) == pytest.approx(0.75)
    assert work.Ledger(10, {}).share(model) == 1.0  # no counted FLOPs: a run is a whole pass


def test_runs_count_samples_times_share_by_stage():
    model = two_layers()
    ledger = work.Ledger(100, cost.model_cost(model).macs, current="setup")
    x = np.ones((50, 8), np.float32)
    outside = sessions.session(model, "cpu")  # made without a ledger: never counted
    with work.counting(ledger):
        outside.run(None, {"x": x})
        sess = sessions.session(model, "cpu")
        with work.stage("statistics"):
            sess.run(None, {"x": x})
            sess.run(None, {"x": x})
        sess.run(None, {"x": x[:10]})
    assert ledger.fpe == {"statistics": pytest.approx(1.0), "setup": pytest.approx(0.1)}
    assert ledger.runs == {"statistics": 2, "setup": 1}
    assert ledger.total == pytest.approx(1.1) and work.active() is None
    np.testing.assert_allclose(
        sess.run(None, {"x": x})[0], sessions.session(model, "cpu").run(None, {"x": x})[0]
    )


def test_compress_reports_fpe_per_stage():
    model = graphs.transformer_ffn()
    data = graphs.sample(model, n=100, seed=1)
    res = api.compress(model, data, keep=0.5, device="cpu")
    w = res.report["work"]
    assert w["samples"] == 100
    assert {"statistics", "curvature probes", "held-out checks", "compile",
            "validation"} <= set(w["by_stage"])  # fmt: skip
    assert w["total"] == pytest.approx(sum(w["by_stage"].values())) and w["total"] > 1
    # validation: at least the compiled model and the original on the 20 validation samples
    assert w["by_stage"]["validation"] >= 2 * 20 / 100 * 0.99
    assert work.active() is None


def test_bound_runs_equal_plain_runs_count_and_reuse_uploads():
    """The IOBinding path (GPU-ready hot loops) gives the numpy path's numbers on the CPU
    provider, counts like it, and uploads a reused input once per array."""
    model = two_layers()
    x = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
    ledger = work.Ledger(30, cost.model_cost(model).macs)
    with work.counting(ledger):
        sess = sessions.session(model, "cpu")
        assert not sess.bind  # the CPU provider runs plainly unless asked
        sess.bind = True
        plain = sess.run(["y"], {"x": x})[0]
        for _ in range(3):
            bound = sess.run_bound(["y"], {"x": x}, reuse=["x"])[0]
            np.testing.assert_array_equal(bound, plain)
    assert sess.device == "cpu" and sess.uploads == 1
    assert ledger.total == pytest.approx(4.0)
    sess.run_bound(["y"], {"x": x.copy()}, reuse=["x"])  # another array: uploaded again
    assert sess.uploads == 2


def test_hooked_runs_through_the_binding_give_the_same_numbers():
    """The hot loop of statistics and checks (HookedModel.run, plan inputs and zero perturbations
    reused on the device) on the binding path equals the plain path on the CPU provider."""
    from plans import random_plan

    from models import load_split, model_path
    from scmopt.analysis.measure import Runner
    from scmopt.io import graph
    from scmopt.units.analysis import analyze

    ug = analyze(graph.load(model_path("cnn_digits")))
    x = {k: v[:40] for k, v in load_split("cnn_digits", "test").items() if k != "y"}
    runner = Runner(ug, x, device="cpu")
    net = runner.network(random_plan(ug, 0.5, seed=1))
    plain = net.run(x, capture=True)
    runner.sess.bind = True
    bound, again = net.run(x, capture=True), net.run(x, capture=True)
    for out in (bound, again):
        np.testing.assert_array_equal(out[0], plain[0])
        assert all(np.array_equal(out[1][t], plain[1][t]) for t in plain[1])
    # each site's plan inputs (M, B at these narrow cuts) and its zero delta, once
    from scmopt.runtime.hooks import PLAN_ROLES

    per_site = [sum(r in PLAN_ROLES for r in runner.hooked.inputs[t]) + 1 for t in runner.sites]
    assert per_site == [3] * len(runner.sites)
    assert runner.sess.uploads == sum(per_site)
