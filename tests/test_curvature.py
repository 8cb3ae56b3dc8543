"""Finite-difference curvature against closed-form Jacobians on small hand-built models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scmopt.analysis import curvature as curv
from scmopt.analysis.measure import Runner, sites
from scmopt.units.analysis import analyze


# small models with known Jacobians (also used by test_measure) ------------------------------
def _model(nodes, inits, n_in: int, n_out: int, batch: int | str = "N") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(size=(6, 4)) / 2, "b1": rng.normal(size=6),
        "W2": rng.normal(size=(5, 6)) / np.sqrt(6), "b2": rng.normal(size=5) * 0.1,
        "W3": rng.normal(size=(3, 5)) / np.sqrt(5), "b3": rng.normal(size=3) * 0.1,
    }  # fmt: skip


def gemm(a: str, w: str, b: str, out: str) -> onnx.NodeProto:
    return helper.make_node("Gemm", [a, w, b], [out], name=f"gemm_{out}", transB=1)


def linear_model(seed: int = 0):
    """x -> h -> z -> y, all Gemm: at cut h, J = W3 W2; at cut z, J = W3."""
    w = weights(seed)
    nodes = [gemm("x", "W1", "b1", "h"), gemm("h", "W2", "b2", "z"), gemm("z", "W3", "b3", "y")]
    return _model(nodes, w, 4, 3), w


def quadratic_model(seed: int = 0):
    """x -> h -> z -> q = z*z -> y: at cut h, J(x) = W3 diag(2 z(x)) W2; at cut q, J = W3."""
    w = weights(seed)
    nodes = [
        gemm("x", "W1", "b1", "h"),
        gemm("h", "W2", "b2", "z"),
        helper.make_node("Mul", ["z", "z"], ["q"], name="square"),
        gemm("q", "W3", "b3", "y"),
    ]
    return _model(nodes, w, 4, 3), w


def relu_model(seed: int = 0, fixed_batch: bool = False) -> onnx.ModelProto:
    """A ReLU MLP; with `fixed_batch` a Reshape bakes batch size 1 in, as old exports do."""
    w = weights(seed)
    w["shape"] = np.array([1, 6] if fixed_batch else [-1, 6])
    nodes = [
        gemm("x", "W1", "b1", "a"),
        helper.make_node("Relu", ["a"], ["r"], name="relu1"),
        helper.make_node("Reshape", ["r", "shape"], ["h"], name="reshape"),
        gemm("h", "W2", "b2", "z"),
        helper.make_node("Relu", ["z"], ["q"], name="relu2"),
        gemm("q", "W3", "b3", "y"),
    ]
    model = _model(nodes, w, 4, 3, batch=1 if fixed_batch else "N")
    model.graph.initializer[-1].CopyFrom(numpy_helper.from_array(w["shape"], "shape"))
    return model


def inputs(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)}


# tests --------------------------------------------------------------------------------------
def _setup(model, n=16):
    ug = analyze(model)
    x = inputs(n)
    runner = Runner(ug, x, device="cpu")
    prober = curv.Prober(ug, sites(ug), device="cpu")
    pf = runner.plan_feeds(None)
    return ug, x, prober, pf, prober.cache(x, pf)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("cut", ["h", "z"])
def test_fd_matches_linear_jacobian(cut):
    model, w = linear_model()
    ug, x, prober, pf, cache = _setup(model)
    jac = w["W3"] @ w["W2"] if cut == "h" else w["W3"]
    c = ug.cuts[cut].channels
    dirs = np.random.default_rng(3).normal(size=(4, 16, c, 1)).astype(np.float32)
    jd = prober.directional(cut, cache, pf, lambda idx: dirs[idx], 4, eps=0.05)
    exact = np.einsum("oc,mnc->mno", jac, dirs[..., 0])
    assert _rel(jd, exact) < 1e-3


def test_fd_matches_quadratic_jacobian():
    model, w = quadratic_model()
    ug, x, prober, pf, cache = _setup(model)
    z = x["x"] @ w["W1"].T + w["b1"]
    z = z @ w["W2"].T + w["b2"]  # [n, 5]
    dirs = np.random.default_rng(4).normal(size=(5, 16, 6, 1)).astype(np.float32)
    jd = prober.directional("h", cache, pf, lambda idx: dirs[idx], 5, eps=0.05)
    jac = np.einsum("oj,nj,jc->noc", w["W3"], 2 * z, w["W2"])  # per sample
    exact = np.einsum("noc,mnc->mno", jac, dirs[..., 0])
    assert _rel(jd, exact) < 1e-3  # central differences are exact on quadratics


def test_forward_differences_exact_on_linear_and_first_order_on_quadratic():
    """Forward differences: exact on a linear network; on a quadratic one the error is
    eps * (d^T H d) / 2 per sample, first order in eps (central ones cancel it)."""
    model, w = linear_model()
    ug, x, prober, pf, cache = _setup(model)
    jac = w["W3"] @ w["W2"]
    dirs = np.random.default_rng(3).normal(size=(4, 16, ug.cuts["h"].channels, 1))
    dirs = dirs.astype(np.float32)
    jd = prober.directional("h", cache, pf, lambda idx: dirs[idx], 4, eps=0.05, central=False)
    assert _rel(jd, np.einsum("oc,mnc->mno", jac, dirs[..., 0])) < 1e-3

    model, w = quadratic_model()
    ug, x, prober, pf, cache = _setup(model)
    z = (x["x"] @ w["W1"].T + w["b1"]) @ w["W2"].T + w["b2"]
    dirs = np.random.default_rng(4).normal(size=(5, 16, 6, 1)).astype(np.float32)
    jac = np.einsum("oj,nj,jc->noc", w["W3"], 2 * z, w["W2"])
    exact = np.einsum("noc,mnc->mno", jac, dirs[..., 0])
    errs = []
    for eps in (0.1, 0.05):
        jd = prober.directional("h", cache, pf, lambda idx: dirs[idx], 5, eps=eps, central=False)
        wd = np.einsum("jc,mnc->mnj", w["W2"], dirs[..., 0])  # the quadratic's own term
        assert _rel(jd, exact + eps * np.einsum("oj,mnj->mno", w["W3"], wd**2)) < 1e-3
        errs.append(_rel(jd, exact))
    assert errs[1] == pytest.approx(errs[0] / 2, rel=0.05)


def test_forward_differences_take_their_base_from_the_subgraph():
    """A zero direction gives exactly zero: f(v) comes from the same subgraph as f(v + eps d),
    not from the capture model (whose rounding would show at eps = 0.05 on weak units)."""
    model = relu_model()
    ug, x, prober, pf, cache = _setup(model)
    zero = np.zeros((2, 16, ug.cuts["h"].channels, 1), np.float32)
    jd = prober.directional("h", cache, pf, lambda idx: zero[idx], 2, eps=0.05, central=False)
    assert np.array_equal(jd, np.zeros_like(jd))


def test_forward_probes_run_half_the_samples_of_central_ones():
    """m directions of n samples: 2 m n subgraph rows centrally, (m + 1) n forward."""
    model = relu_model()
    ug, x, prober, pf, cache = _setup(model)
    dirs = np.random.default_rng(5).normal(size=(8, 16, ug.cuts["h"].channels, 1))
    rows = {}
    for central in (True, False):
        calls = []
        real = prober._run_sub
        prober._run_sub = lambda sess, feeds, n, real=real, calls=calls: (
            calls.append(n) or real(sess, feeds, n)
        )
        prober.directional("h", cache, pf, lambda idx: dirs[idx].astype(np.float32), 8,
                           eps=0.05, central=central)  # fmt: skip
        prober._run_sub = real
        rows[central] = sum(calls)
    assert rows == {True: 2 * 8 * 16, False: (8 + 1) * 16}


def test_unit_estimator_kappa_matches_analytic():
    model, w = quadratic_model()
    ug, x, prober, pf, cache = _setup(model)
    base = prober.base("h", cache)
    dirs = {}
    for ch in range(6):
        mean = base[:, ch].mean(0)
        dirs[ug.cuts["h"].units[ch]] = curv.Direction([ch], np.zeros(0, int), np.zeros(0), mean)
    got = curv.unit(prober, cache, pf, {"h": dirs}, eps=0.05)
    z = (x["x"] @ w["W1"].T + w["b1"]) @ w["W2"].T + w["b2"]
    jac = np.einsum("oj,nj,jc->noc", w["W3"], 2 * z, w["W2"])
    for ch in range(6):
        d = base[:, ch, 0].mean() - base[:, ch, 0]
        risk = np.mean(np.sum((jac[:, :, ch] * d[:, None]) ** 2, axis=1))
        assert got.risk["h"][ch] == pytest.approx(risk, rel=1e-3)
        assert got.kappa["h"][ch] == pytest.approx(risk / np.mean(d**2), rel=1e-3)


def test_ablation_is_exact_effect():
    model = relu_model()
    ug, x, prober, pf, cache = _setup(model)
    base = prober.base("h", cache)
    unit = ug.cuts["h"].units[2]
    mean = base[:, 2].mean(0)
    one = {"h": {unit: curv.Direction([2], np.zeros(0, int), np.zeros(0), mean)}}
    got = curv.unit(prober, cache, pf, one, eps=1.0, central=False)
    a = np.maximum(x["x"] @ weights()["W1"].T + weights()["b1"], 0)

    def f(h):
        w = weights()
        return np.maximum(h @ w["W2"].T + w["b2"], 0) @ w["W3"].T + w["b3"]

    b = a.copy()
    b[:, 2] = a[:, 2].mean()
    assert got.risk["h"][2] == pytest.approx(np.mean(np.sum((f(b) - f(a)) ** 2, 1)), rel=1e-4)


def test_layer_estimator_exact_at_last_linear_layer():
    model, w = linear_model()
    ug, x, prober, pf, cache = _setup(model, n=64)
    kept = {t: np.ones(ug.cuts[t].channels, bool) for t in prober.sites}
    got = curv.layer(prober, cache, pf, kept, probes=16, seed=0)
    exact = np.sum(w["W3"] ** 2, axis=0)  # kappa_out = 1 on the logits
    np.testing.assert_allclose(got.kappa["z"], exact, rtol=0.15)


def test_uniform_and_coupling():
    model, w = linear_model()
    ug = analyze(model)
    assert all(np.all(k == 1) for k in curv.uniform(ug, sites(ug)).kappa.values())
    kap = np.sum(w["W3"] ** 2, axis=0)
    k = curv.coupling(ug, "z", kap)
    np.testing.assert_allclose(k, w["W3"].T @ w["W3"], rtol=1e-5, atol=1e-6)


def test_fixed_batch_probes_match_batched():
    from test_batch import merged_batch_model  # runs one sample at a time (scmopt.io.batch)

    got = []
    merged = merged_batch_model()
    for model in (merged, relu_model()):
        ug = analyze(model)
        x = inputs(8)
        runner = Runner(ug, x, device="cpu")
        assert runner.batched == (model is not merged)
        prober = curv.Prober(ug, sites(ug), batched=runner.batched, device="cpu")
        pf = runner.plan_feeds(None)
        cache = prober.cache(x, pf)
        dirs = np.random.default_rng(0).normal(size=(3, 8, 6, 1)).astype(np.float32)
        got.append(prober.directional("h", cache, pf, lambda idx, d=dirs: d[idx], 3, eps=0.1))
    np.testing.assert_allclose(got[0], got[1], rtol=1e-4, atol=1e-5)


def test_probe_calls_bounded_by_elements_give_the_same_estimates():
    """max_elements caps the copies per onnxruntime call (memory on wide feature maps); one
    copy per call must give the same J d as the default batching."""
    model, _ = quadratic_model()
    ug, x, prober, pf, cache = _setup(model)
    small = curv.Prober(ug, sites(ug), device="cpu", max_elements=1)
    dirs = np.random.default_rng(5).normal(size=(5, 16, 6, 1)).astype(np.float32)
    a = prober.directional("h", cache, pf, lambda idx: dirs[idx], 5, eps=0.05)
    b = small.directional("h", small.cache(x, pf), pf, lambda idx: dirs[idx], 5, eps=0.05)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_released_sessions_are_made_again_with_the_same_estimates():
    """Prober.release drops its sessions between rounds (memory); the next probe makes them
    again and gives the same J d."""
    model, _ = quadratic_model()
    ug, x, prober, pf, cache = _setup(model)
    dirs = np.random.default_rng(6).normal(size=(3, 16, 6, 1)).astype(np.float32)
    a = prober.directional("h", cache, pf, lambda idx: dirs[idx], 3, eps=0.05)
    assert prober._sessions
    prober.release()
    assert not prober._sessions
    b = prober.directional("h", prober.cache(x, pf), pf, lambda idx: dirs[idx], 3, eps=0.05)
    np.testing.assert_array_equal(a, b)


def test_layer_and_unit_probes_hold_no_subgraph_session_after_a_cut():
    """Each cut's subgraph session goes once its probes are done (at ImageNet scale the 43
    sessions held 0.9 GB); only the capture session stays, and estimates do not change."""
    model, _ = quadratic_model()
    ug, x, prober, pf, cache = _setup(model)
    kept = {t: np.ones(ug.cuts[t].channels, bool) for t in prober.sites}
    a = curv.layer(prober, cache, pf, kept, probes=4, seed=3)
    assert set(prober._sessions) <= {""}
    b = curv.layer(prober, cache, pf, kept, probes=4, seed=3)
    for t in prober.sites:
        np.testing.assert_array_equal(a.kappa[t], b.kappa[t])
