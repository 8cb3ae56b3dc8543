"""Streaming moments against numpy, and the closed-form swap moments against Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from models import load_split, model_path
from scmopt.analysis.measure import Runner, ancestors, sites
from scmopt.analysis.stats import CutStats, Moments, collect
from scmopt.io import graph
from scmopt.units.analysis import analyze


def _data(n=300, c=5, p=3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(c, c))
    x = np.einsum("cd,ndp->ncp", mix, rng.normal(size=(n, c, p)))
    return (x + 10 * rng.normal(size=(1, c, p))).astype(np.float32)  # large means


def _moments(x: np.ndarray, batch=64) -> Moments:
    m = Moments(x.shape[1], x.shape[2])
    for s in range(0, len(x), batch):
        m.add(x[s : s + batch])
    return m


def test_moments_match_numpy():
    x = _data()
    m = _moments(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(m.mean, x64.mean(0), rtol=1e-6, atol=1e-6)
    second = np.einsum("ncp,ndp->cd", x64, x64) / (x.shape[0] * x.shape[2])
    np.testing.assert_allclose(m.second, second, rtol=1e-6)
    cs = CutStats("t", m, Moments(5, 3), w_plain=1.0, w_same=0.0, w_up=0.0, p=0.5)
    centred = x64 - x64.mean(0, keepdims=True)  # per-position centring
    cov = np.einsum("ncp,ndp->cd", centred, centred) / (x.shape[0] * x.shape[2])
    np.testing.assert_allclose(cs.covariance(0), cov, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cs.variance, np.diag(cov), rtol=1e-5)


def test_pooled_moments_for_dynamic_shapes():
    x = _data(p=4)
    m = Moments(5, 1, pooled=True)
    for s in range(0, len(x), 50):
        m.add(x[s : s + 50])
    np.testing.assert_allclose(m.mean[:, 0], x.astype(np.float64).mean((0, 2)), rtol=1e-6)
    assert m.mean_positions == 4


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_closed_form_swap_moments_match_monte_carlo(p):
    x = _data(n=400, seed=1).astype(np.float64)
    n, c, _ = x.shape
    cs = CutStats("t", _moments(x.astype(np.float32)), Moments(c, 3), 0.0, 1.0, 0.0, p)
    rng = np.random.default_rng(2)
    draws = 200_000
    b = rng.integers(0, n, draws)
    s = rng.integers(0, n, draws)
    m = rng.random((draws, c, 1)) < p
    mixed = np.where(m, x[s], x[b])  # every unit swappable
    one = np.einsum("ncp,ndp->cd", mixed, x[b]) / (draws * 3)  # k swapped, j not
    two = np.einsum("ncp,ndp->cd", mixed, mixed) / (draws * 3)
    scale = np.abs(cs.second(0)).max()
    off = ~np.eye(c, dtype=bool)
    assert np.abs(cs.second(1) - one)[off].max() / scale < 0.01
    assert np.abs(cs.second(2) - two)[off].max() / scale < 0.01
    np.testing.assert_allclose(np.diag(cs.second(2)), np.diag(cs.second(0)))


def test_collect_plain_moments_and_weights():
    ug = analyze(graph.load(model_path("cnn_digits")))
    data = {k: v[:96] for k, v in load_split("cnn_digits").items() if k != "y"}
    runner = Runner(ug, data, device="cpu", batch_size=32)
    st = collect(runner, data, None, p=0.5, seed=0, upstream_fraction=1.0)
    anc = ancestors(ug, sites(ug))
    _, caps = runner.run(data, runner.plan_feeds(None), capture=True)
    for t, cs in st.cuts.items():
        assert cs.w_plain + cs.w_same + cs.w_up == pytest.approx(1.0)
        assert cs.w_up == pytest.approx(len(anc[t]) / (len(st.cuts) + 1))
        ref = caps[t].astype(np.float64)
        np.testing.assert_allclose(cs.plain.mean, ref.mean(0), rtol=1e-4, atol=1e-5)
        if anc[t]:
            assert cs.up.n > 0  # swaps upstream were sampled
    assert st.out_variance > 0


def test_collect_original_values_under_a_plan():
    """With original=True the target moments are the original network's, the predictor
    moments the plan's, measured on the same inputs and interventions."""
    ug = analyze(graph.load(model_path("cnn_digits")))
    data = {k: v[:96] for k, v in load_split("cnn_digits").items() if k != "y"}
    runner = Runner(ug, data, device="cpu", batch_size=32)
    first = sites(ug)[0]
    unit = ug.cuts[first].units[0]
    from scmopt.plan import Plan

    plan = Plan().set_constant(unit, {t: 0.0 for t in ug.units[unit].cuts})
    orig = collect(runner, data, None, p=0.5, seed=0, upstream_fraction=0.0)
    both = collect(runner, data, plan, p=0.5, seed=0, upstream_fraction=0.0, original=True)
    only = collect(runner, data, plan, p=0.5, seed=0, upstream_fraction=0.0)
    assert not collect(runner, data, None, original=True).cuts[first].original  # no plan
    for t in orig.cuts:
        cs = both.cuts[t]
        assert cs.original and cs.channels == ug.cuts[t].channels
        np.testing.assert_allclose(cs.target_mean, orig.cuts[t].mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cs.mean, only.cuts[t].mean, rtol=1e-5, atol=1e-6)
        for sw in (0, 1, 2):
            np.testing.assert_allclose(cs.covariance(sw, "o", "o"), orig.cuts[t].covariance(sw),
                                       rtol=1e-4, atol=1e-6)  # fmt: skip
            np.testing.assert_allclose(cs.covariance(sw), only.cuts[t].covariance(sw),
                                       rtol=1e-4, atol=1e-6)  # fmt: skip
    c = both.cuts[first].channels
    assert both.cuts[first].target_mean[0].mean() != pytest.approx(0.0)
    assert both.cuts[first].mean[0] == pytest.approx(np.zeros_like(both.cuts[first].mean[0]))
    assert both.cuts[first].covariance(1, "p", "o").shape == (c, c)
