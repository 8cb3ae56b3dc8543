"""Forward-pass equivalents: each run counts its samples times its graph's share of the FLOPs,
by the stage that asked for it; compress reports them; nothing is counted without a ledger."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
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
    assert isinstance(sessions.session(model, "cpu"), ort.InferenceSession)  # not counted
    with work.counting(ledger):
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
