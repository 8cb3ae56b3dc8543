"""Streaming moments against numpy, and the closed-form swap moments against Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from models import load_split, model_path
from scmopt.analysis.measure import Runner, ancestors, sites
from scmopt.analysis.stats import CutStats, Moments, collect, token_weights
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


# --- padding masks ----------------------------------------------------------------------------


def _masked_reference(x: np.ndarray, w: np.ndarray):
    """Per-position means over counted samples and E[a a^T] over counted (sample, position)."""
    keep = w > 0
    mean = np.stack([x[keep[:, p], :, p].mean(0) for p in range(x.shape[2])], axis=1)
    tokens = np.concatenate([x[i][:, keep[i]] for i in range(len(x))], axis=1)  # [C, tokens]
    return mean, tokens @ tokens.T / tokens.shape[1]


@pytest.mark.parametrize("pooled", [False, True])
def test_weighted_moments_skip_padding(pooled):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 5)) + 2.0
    w = (rng.random((40, 5)) < 0.7).astype(float)
    w[:, 0] = 1.0  # every position counts somewhere
    garbage = np.where(w[:, None, :] > 0, x, 1e4)  # padding values must not matter
    m = Moments(3, 5, pooled)
    for s in (slice(0, 17), slice(17, 40)):  # batches do not matter
        m.add(garbage[s].astype(np.float32), w[s])
    mean, second = _masked_reference(x.astype(np.float32).astype(float), w)
    if pooled:
        keep = w > 0
        tokens = np.concatenate([x[i][:, keep[i]] for i in range(40)], axis=1)
        np.testing.assert_allclose(m.mean[:, 0], tokens.mean(1), rtol=1e-5)
    else:
        np.testing.assert_allclose(m.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(m.second, second, rtol=1e-5)
    assert m.mean_positions == pytest.approx(w.sum() / 40)


def test_weights_of_ones_equal_the_unweighted_moments_and_mixing_works():
    x = np.random.default_rng(1).normal(size=(30, 4, 6)).astype(np.float32)
    a, b, c = Moments(4, 6), Moments(4, 6), Moments(4, 6)
    a.add(x)
    b.add(x, np.ones((30, 6)))
    c.add(x[:10])
    c.add(x[10:], np.ones((20, 6)))  # unweighted samples first, then weighted ones
    for other in (b, c):
        np.testing.assert_allclose(other.mean, a.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(other.second, a.second, rtol=1e-9, atol=1e-12)


def test_token_weights_follow_tokens_and_heads_only():
    from scmopt.io.data import padding_mask
    from tests import graphs

    ug = analyze(graphs.attention_block())
    head_cut = next(t for t, c in ug.cuts.items() if ug.units[c.units[0]].kind == "head")
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    w = token_weights(ug, head_cut, mask, slice(0, 2), 5 * 4)  # 5 tokens x Dh = 4
    assert w.shape == (2, 20) and w[0].tolist() == [1.0] * 8 + [0.0] * 12 and w[1].all()
    assert token_weights(ug, head_cut, None, slice(0, 2), 20) is None
    assert token_weights(ug, head_cut, mask, slice(0, 2), 7) is None  # not whole tokens
    assert padding_mask({"attention_mask": mask, "x": np.zeros((2, 5))}) == "attention_mask"
    assert padding_mask({"attention_mask": np.ones((2, 5), np.int64)}) is None  # no padding
    assert padding_mask({"mask": np.full((2, 5), 0.5)}) is None  # not 0/1


@pytest.mark.parametrize("c,p", [(8, 5), (520, 3), (520, 40)])
def test_gram_sums_every_sample(c, p):
    """Narrow cuts: one sample per product, bit for bit the loop; wide cuts (>= WIDE channels):
    several samples per float32 product, the same sums to float32 accuracy."""
    from scmopt.analysis import stats

    rng = np.random.default_rng(1)
    a = rng.normal(size=(21, c, p)).astype(np.float32)
    b = rng.normal(size=(21, c, p)).astype(np.float32)
    got = stats._gram(a, b)
    ref = np.tensordot(a.astype(np.float64), b.astype(np.float64), axes=([0, 2], [0, 2]))
    loop = np.zeros((c, c))
    for ai, bi in zip(a, b, strict=True):
        loop += ai @ bi.T
    if c < stats.WIDE:
        assert np.array_equal(got, loop)
    assert np.allclose(got, ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def test_the_original_values_are_cached_whole_or_not_at_all(monkeypatch):
    """The Runner keeps the original's site values between statistics rounds only when the
    whole split's fit in CACHE_BYTES (a part would hold memory through the probes for a part
    of a pass); the moments are the same either way."""
    ug = analyze(graph.load(model_path("cnn_digits")))
    data = {k: v[:96] for k, v in load_split("cnn_digits").items() if k != "y"}
    unit = ug.cuts[sites(ug)[0]].units[0]
    from scmopt.plan import Plan

    plan = Plan().set_constant(unit, {t: 0.0 for t in ug.units[unit].cuts})
    whole = Runner(ug, data, device="cpu", batch_size=32)
    a = collect(whole, data, plan, p=0.5, seed=0, original=True)
    cached = whole.__dict__["_orig_caps"]
    assert len(cached) == 3  # all three batches
    per_sample = sum(v.nbytes for v in next(iter(cached.values()))[1].values()) / 32
    part = Runner(ug, data, device="cpu", batch_size=32)
    monkeypatch.setattr(Runner, "CACHE_BYTES", int(per_sample * 64))  # two of the three fit
    b = collect(part, data, plan, p=0.5, seed=0, original=True)
    assert not part.__dict__["_orig_caps"]
    for t in a.cuts:
        np.testing.assert_array_equal(a.cuts[t].plain.s2, b.cuts[t].plain.s2)
        np.testing.assert_array_equal(a.cuts[t].up.s2, b.cuts[t].up.s2)


def test_forgetting_a_targets_blocks_changes_no_fit():
    """Stats.forget drops the covariance blocks and fold selections of one fit target; fits
    asked for again are recomputed to the same numbers."""
    from scmopt.analysis.fits import fit_cut
    from scmopt.analysis.stats import Values
    from scmopt.plan import Plan

    ug = analyze(graph.load(model_path("cnn_digits")))
    data = {k: v[:96] for k, v in load_split("cnn_digits").items() if k != "y"}
    cut = sites(ug)[1]
    unit = ug.cuts[sites(ug)[0]].units[0]
    plan = Plan().set_constant(unit, {t: 0.0 for t in ug.units[unit].cuts})
    st = collect(Runner(ug, data, device="cpu"), data, plan, p=0.5, seed=0, original=True)
    cs = st.cuts[cut]
    kept = set(ug.units) - {ug.cuts[cut].units[0]}
    targets = list(ug.cuts[cut].units)

    def fits(target):
        return fit_cut(ug, cs, targets, kept, fold=True, target=target)

    before = {t: fits(t) for t in (Values.ORIGINAL, Values.PLAN)}
    assert all(any(f.pred for f in b.values()) for b in before.values())  # folds, not constants
    reads = {k for k in cs.memo if isinstance(k, tuple) and Values.ORIGINAL in k[1:]}
    assert reads and any(k[0] == "fold" for k in reads)
    st.forget(Values.ORIGINAL)
    assert not reads & set(cs.memo)
    assert any(isinstance(k, tuple) and Values.PLAN in k[1:] for k in cs.memo)
    for t in (Values.ORIGINAL, Values.PLAN):
        after = fits(t)
        for j, f in before[t].items():
            assert after[j].pred == f.pred and after[j].resid == f.resid
            np.testing.assert_array_equal(after[j].mean, f.mean)
            np.testing.assert_array_equal(after[j].offset, f.offset)
            np.testing.assert_array_equal(after[j].coef, f.coef)
