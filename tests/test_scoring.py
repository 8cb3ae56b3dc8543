"""Fits and scores: folds never lose to constants, swaps shrink folds, plans validate."""

from __future__ import annotations

import numpy as np
import pytest

from models import load_split, model_path
from scmopt.analysis.criteria import CRITERIA
from scmopt.analysis.curvature import Prober
from scmopt.analysis.fits import _forward, _ls, _ls_batch, fit_cut
from scmopt.analysis.measure import Runner
from scmopt.analysis.residuals import residual_cov, residual_cross, residual_var
from scmopt.analysis.scoring import Scorer, apply
from scmopt.analysis.selection import select
from scmopt.analysis.stats import CutStats, Moments, collect
from scmopt.io import graph
from scmopt.plan import Plan
from scmopt.units.analysis import analyze


class _Cut:
    def __init__(self, c):
        self.units = [f"u{i}" for i in range(c)]
        self.unit_channels = {u: [i] for i, u in enumerate(self.units)}
        self.first_channels = np.arange(c)
        self.unit_index = {u: i for i, u in enumerate(self.units)}
        self.positions = 3


class _UG:
    def __init__(self, c):
        self.cuts = {"t": _Cut(c)}


def _stats(seed: int, p: float, w_same: float, c: int = 8) -> CutStats:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(500, 3, 3))
    mix = rng.normal(size=(c, 3))
    x = np.einsum("ck,nkp->ncp", mix, base) + 0.3 * rng.normal(size=(500, c, 3)) + 2.0
    m = Moments(c, 3)
    m.add(x.astype(np.float32))
    return CutStats("t", m, Moments(c, 3), 1 - w_same, w_same, 0.0, p)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("w_same", [0.0, 0.5, 1.0])
def test_fold_never_worse_than_constant(seed, w_same):
    cs = _stats(seed, 0.5, w_same)
    ug = _UG(8)
    kept = set(ug.cuts["t"].units)
    fits = fit_cut(ug, cs, ["u0", "u3", "u7"], kept, fold=True)
    for f in fits.values():
        assert f.pred and f.resid <= f.var + 1e-12
        assert f.residual(True) <= f.residual(False)
        d = residual_cov(cs, [f], fold=True)
        assert d[0, 0] == pytest.approx(f.resid, rel=1e-6, abs=1e-9)


def test_swaps_shrink_folds():
    ug = _UG(8)
    kept = set(ug.cuts["t"].units)
    plain = fit_cut(ug, _stats(0, 0.5, 0.0), ["u0"], kept)["u0"]
    swapped = fit_cut(ug, _stats(0, 0.5, 1.0), ["u0"], kept)["u0"]
    assert np.abs(swapped.coef).sum() < np.abs(plain.coef).sum()
    assert swapped.resid > plain.resid  # a swap hides part of the information


@pytest.fixture(scope="module")
def mlp():
    ug = analyze(graph.load(model_path("mlp_digits")))
    data = {k: v[:128] for k, v in load_split("mlp_digits").items() if k != "y"}
    runner = Runner(ug, data, device="cpu")
    prober = Prober(ug, runner.sites, device="cpu")
    scorer = Scorer(ug, prober, {k: v[:16] for k, v in data.items()}, data, seed=0)
    return ug, runner, scorer, collect(runner, data, None), data


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_scores_and_builds_a_valid_plan(mlp, criterion):
    ug, runner, scorer, st, _ = mlp
    cand = sorted(ug.prunable)
    sc = scorer.score(st, Plan(), runner.plan_feeds(None), cand, criterion, fold=True)
    assert set(sc.rank) == set(cand)
    for u in cand:
        assert sc.fold_risk[u] <= sc.const_risk[u] + 1e-12
    kept = set(ug.units)
    units, fits, pred = select(sc, st, lambda k, t: scorer.fits(st, k, t, True), kept,
                               fold=True, out_var=st.out_variance, count=20)  # fmt: skip
    assert len(units) == 20 and pred >= 0
    plan = Plan()
    for u in units:
        apply(plan, u, fits[u], sc.action[u], ug)
        for f in fits[u].values():
            assert not set(f.pred) & set(units)  # folds lean on kept units only
    plan.validate(ug)


@pytest.mark.parametrize("coupled", [False, True])
def test_incremental_greedy_predicts_the_joint_risk_of_what_it_chose(mlp, coupled):
    """select updates ordering terms and joint risks from the rows that changed; its predicted
    risk must equal the second-order risk of the chosen set with the returned fits, made from
    scratch: sum over cuts of positions x sum K * residual_cov / out_var."""
    from scmopt.analysis.curvature import coupling

    ug, runner, scorer, st, _ = mlp
    cand = sorted(ug.prunable)
    sc = scorer.score(st, Plan(), runner.plan_feeds(None), cand, "curvature", fold=True)
    kmat = {t: coupling(ug, t, sc.kappa[t]) if coupled else np.diag(sc.kappa[t])
            for t in st.cuts}  # fmt: skip
    units, fits, pred = select(sc, st, lambda k, t: scorer.fits(st, k, t, True), set(ug.units),
                               fold=True, out_var=st.out_variance, count=120,
                               coupling=kmat if coupled else None)  # fmt: skip
    assert len(units) == 120
    assert sum(bool(f.pred) for u in units for f in fits[u].values()) > 30  # folds were refitted
    want = 0.0
    for t in st.cuts:
        at = [u for u in units if t in fits[u]]
        if at:
            ch = [fits[u][t].channels[0] for u in at]
            d = residual_cov(st.cuts[t], [fits[u][t] for u in at], fold=True)
            want += st.cuts[t].positions * float(np.sum(kmat[t][np.ix_(ch, ch)] * d))
    assert pred == pytest.approx(want / st.out_variance, rel=1e-8)


def test_curvature_ranks_differ_from_variance(mlp):
    ug, runner, scorer, st, _ = mlp
    cand = sorted(ug.prunable)
    pf = runner.plan_feeds(None)
    cur = scorer.score(st, Plan(), pf, cand, "curvature")
    var = scorer.score(st, Plan(), pf, cand, "variance")
    assert cur.probed == set(cand)  # no focus: every unit probed
    assert sorted(cand, key=cur.rank.get) != sorted(cand, key=var.rank.get)


def test_dead_units_in_the_probe_band_do_not_zero_the_screen():
    ug = analyze(graph.load(model_path("cnn_digits")))
    data = {k: v[:128] for k, v in load_split("cnn_digits").items() if k != "y"}
    runner = Runner(ug, data, device="cpu")
    scorer = Scorer(ug, Prober(ug, runner.sites, device="cpu"),
                    {k: v[:16] for k, v in data.items()}, data)  # fmt: skip
    st = collect(runner, data, None)
    t = "/Relu_output_0"
    var = st.cuts[t].variance
    dead = [u for i, u in enumerate(ug.cuts[t].units) if var[i] == 0]
    live = [i for i in range(len(var)) if var[i] > 0]
    assert dead, "cnn_digits has dead ReLUs in its last hidden layer"
    cand = sorted(ug.prunable)
    sc = scorer.score(st, Plan(), runner.plan_feeds(None), cand, "curvature",
                      focus=lambda pre: dead + [ug.cuts[t].units[live[0]]])  # fmt: skip
    assert np.all(sc.kappa[t][live] > 0)


def test_earlier_folds_leaning_on_a_unit_raise_its_removal_cost(mlp):
    """A unit that folds of earlier rounds lean on (coefficient a from channel o) costs
    d_u^2 (kappa_u + a^2 kappa_o), not kappa_u d_u^2: its residual reaches those folds too."""
    ug, runner, scorer, st, _ = mlp
    cand = sorted(ug.prunable)
    sc = scorer.score(st, Plan(), runner.plan_feeds(None), cand, "variance", fold=True)
    kept = set(ug.units)
    live = sorted((v for v in cand if sc.risk[v] > 0), key=lambda v: (sc.risk[v], v))
    u = live[len(live) // 2]
    t = next(iter(sc.fits[u]))
    ch = sc.fits[u][t].channels[0]
    other = (ch + 1) % len(ug.cuts[t].units)

    def cost(leaning):
        units, _, pred = select(sc, st, lambda k, tt: scorer.fits(st, k, tt, True), kept,
                                fold=True, out_var=st.out_variance, count=1,
                                allowed=lambda v, chosen: v == u, leaning=leaning)  # fmt: skip
        assert units == [u]
        return pred

    lean = np.zeros(len(ug.cuts[t].units))
    lean[other] = 3.0
    plain, leaned = cost(None), cost({t: {u: lean}})
    k = sc.kappa[t]
    assert plain > 0
    assert leaned == pytest.approx(plain * (k[ch] + 9.0 * k[other]) / k[ch], rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_batched_least_squares_equals_one_by_one(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 9)) @ rng.normal(size=(9, 9))
    cov = np.cov(x.T)
    pool = np.array([0, 1, 2, 3, 4, 5, 8])  # the candidates of target 7
    a_pool, c_pool = cov[np.ix_(pool, pool)], cov[pool, 7]
    sets = np.array([[0, 3, k] for k in (1, 2, 4, 5, 6)])  # positions in the pool
    r, a = _ls_batch(a_pool, c_pool, np.diagonal(a_pool), sets, float(cov[7, 7]), 1e-3)
    for i, row in enumerate(sets):
        r1, a1 = _ls(a_pool, c_pool, list(row), float(cov[7, 7]), 1e-3)
        assert r[i] == pytest.approx(r1, rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(a[i], a1, rtol=1e-9)
        # the same system solved directly on the whole matrix
        s = pool[row]
        reg = cov[np.ix_(s, s)] + 1e-3 * np.diag(np.diag(cov)[s] + 1e-30)
        np.testing.assert_allclose(a[i], np.linalg.solve(reg, cov[s, 7]), rtol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_forward_selection_picks_the_best_reduction_each_step(seed):
    """Each step adds the candidate whose set has the smallest ridge residual, checked against
    solving every candidate set on the whole matrix."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    cov = np.cov(x.T)
    cand, vj = np.array([0, 2, 3, 5, 6, 8, 9, 11]), float(cov[7, 7])
    chosen, coef, resid = _forward(cov, cov, cand, 7, vj, 3, 1e-3)
    assert len(chosen) == 3 and len(set(chosen)) == 3 and set(chosen) <= set(cand.tolist())

    def resid_of(s):
        reg = cov[np.ix_(s, s)] + 1e-3 * np.diag(np.diag(cov)[s] + 1e-30)
        a = np.linalg.solve(reg, cov[s, 7])
        return vj - 2 * a @ cov[s, 7] + a @ cov[np.ix_(s, s)] @ a, a

    for step in range(3):
        prefix = chosen[:step]
        best = min((resid_of(prefix + [int(k)])[0], int(k)) for k in cand if k not in prefix)
        assert chosen[step] == best[1]
    r, a = resid_of(chosen)
    assert resid == pytest.approx(r, rel=1e-9) and 0 <= resid < vj
    np.testing.assert_allclose(coef, a, rtol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_memoised_fold_selection_equals_a_fresh_one(seed):
    """The memo on the moments returns what a fresh selection computes, for every kept set
    (a different predictor pool is a different key), and is filled by the first call."""
    cs = _stats(seed, 0.5, 0.5)
    ug = _UG(8)
    units = ug.cuts["t"].units
    for kept in (set(units), set(units) - {"u1", "u5"}, {"u2", "u4", "u6"}):
        fresh = fit_cut(ug, _stats(seed, 0.5, 0.5), ["u0", "u3"], kept)
        first = fit_cut(ug, cs, ["u0", "u3"], kept)
        again = fit_cut(ug, cs, ["u0", "u3"], kept)
        for u in ("u0", "u3"):
            for f in (first[u], again[u]):
                assert f.pred == fresh[u].pred
                np.testing.assert_array_equal(f.coef, fresh[u].coef)
                np.testing.assert_array_equal(f.offset, fresh[u].offset)
                assert f.resid == fresh[u].resid
    assert len(cs.memo[("fold", "o")]) == 6  # two targets x three pools
    again["u0"].coef[:] = 0.0  # fits own their coefficients: the memo is not aliased
    assert fit_cut(ug, cs, ["u0"], {"u2", "u4", "u6"})["u0"].coef.any()


@pytest.mark.parametrize("seed", range(3))
def test_gathered_residual_covariance_equals_the_dense_formula(seed):
    """residual_cov gathers the few predictors of each fold; the dense form T C0 T' + T C1 A' +
    A C1' T' + A C2 A' (T one-hot targets, A minus the coefficients) is the reference."""
    cs = _stats(seed, 0.5, 0.5)
    ug = _UG(8)
    fits = fit_cut(ug, cs, ["u0", "u3", "u5"], {"u1", "u2", "u4", "u6", "u7"}, max_coef=3)
    fits["u3"] = fit_cut(ug, cs, ["u3"], {"u1"}, max_coef=1)["u3"]  # fewer predictors
    fits["u5"].pred, fits["u5"].resid = [], np.inf  # a constant among the folds
    order = [fits[u] for u in ("u0", "u3", "u5")]
    t = np.zeros((3, 8))
    a = np.zeros((3, 8))
    for r, f in enumerate(order):
        t[r, f.channels[0]] = 1.0
        if f.pred:
            a[r, f.pred_idx] = -f.coef
    c0, c1, c2 = cs.covariance(0, "o", "o"), cs.covariance(1, "o", "p"), cs.covariance(2)
    dense = t @ c0 @ t.T + t @ c1 @ a.T + (t @ c1 @ a.T).T + a @ c2 @ a.T
    np.testing.assert_allclose(residual_cov(cs, order, fold=True), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(residual_cov(cs, order, fold=False), t @ c0 @ t.T, rtol=1e-12)
    # the blocks and the diagonal the greedy's incremental terms use, made on their own
    for rows, cols in (([0], [1, 2]), ([1, 2], [0]), ([2], [2])):
        got = residual_cross(cs, [order[i] for i in rows], [order[j] for j in cols], fold=True)
        np.testing.assert_allclose(got, dense[np.ix_(rows, cols)], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(residual_var(cs, order, fold=True), np.diag(dense), rtol=1e-12,
                               atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("buffered", [False, True])
@pytest.mark.parametrize("keys", ["diagonal", "coupled", "units"])
def test_chosen_sums_equal_the_gathered_cross_terms(keys, buffered, monkeypatch):
    """ChosenSums (the greedy's maintained cross terms with the chosen units) equals the direct
    sum_j K[r, j] E[d_r d_j] from residual_cross, after adds, removals and refits; buffered
    (wide cuts): with some rank-1 updates flushed into P and others still pending."""
    from scmopt.analysis.residuals import Block, ChosenSums
    from scmopt.analysis.stats import Values

    if buffered:
        monkeypatch.setattr(ChosenSums, "WIDE", 1)
        monkeypatch.setattr(ChosenSums, "BUFFER", 5)  # 8 updates: 5 flushed, 3 pending

    c = 12
    cs = _stats(3, 0.5, 0.5, c=c)
    ug = _UG(c)
    units = ug.cuts["t"].units
    rng = np.random.default_rng(0)
    a = rng.normal(size=(c, c))
    kch = a @ a.T  # channel coupling, symmetric
    kap = np.abs(rng.normal(size=c)) + 0.1
    kmat = {"diagonal": np.diag(kap), "coupled": kch, "units": kch[::-1, ::-1].copy()}[keys]
    pos = {u: c - 1 - i for i, u in enumerate(units)}  # unit keys: a permutation of channels
    chan = np.array([units.index(u) for u in sorted(units, key=pos.get)])

    def key(u: str) -> int:
        return pos[u] if keys == "units" else units.index(u)

    def kcol(u: str, ch: int) -> np.ndarray:
        return kmat[:, key(u)]

    sums = ChosenSums(cs, True, Values.PLAN, kcol, chan if keys == "units" else np.arange(c))
    chosen = ["u0", "u3", "u7", "u9"]
    kept = set(units) - set(chosen)
    fits = fit_cut(ug, cs, chosen, kept)
    assert sum(bool(f.pred) for f in fits.values()) >= 2  # folds, not only constants
    for u in chosen:
        sums.add(u, fits[u])
    # refit two chosen units onto fewer kept units: old fits out, new ones in
    refit = fit_cut(ug, cs, ["u3", "u9"], kept - {"u1", "u2"})
    for u in ("u3", "u9"):
        sums.add(u, fits[u], -1.0)
        sums.add(u, refit[u])
        fits[u] = refit[u]
    rows_units = ["u1", "u5", "u6", "u3"]
    rows = Block.of([fit_cut(ug, cs, [u], kept - {u})[u] if u not in fits else fits[u]
                     for u in rows_units], True, rows_units)  # fmt: skip
    cols = Block.of([fits[u] for u in chosen], True, chosen)
    kk = kmat[np.ix_([key(u) for u in rows_units], [key(u) for u in chosen])]
    want = np.sum(kk * residual_cross(cs, rows, cols, True, Values.PLAN), axis=1)
    got = sums.rows(rows, np.array([key(u) for u in rows_units]))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if buffered and keys != "diagonal":
        assert len(sums._k) == 3


def test_top_k_equals_the_stable_sort_prefix():
    """fits._top (partition, then a sort of k) is np.argsort(kind="stable")[:k], ties and
    NaNs included."""
    from scmopt.analysis.fits import _top

    rng = np.random.default_rng(0)
    for trial in range(2000):
        n, k = int(rng.integers(1, 300)), int(rng.integers(1, 40))
        x = rng.integers(0, 5, size=n).astype(float) if trial % 2 else rng.normal(size=n)
        if trial % 7 == 0:
            x[rng.integers(0, n, 3)] = np.nan
        np.testing.assert_array_equal(_top(x, k), np.argsort(x, kind="stable")[:k])


def test_the_greedys_kept_masks_follow_its_kept_set(mlp):
    """selection._Kept / _Without answer for a whole cut what unit-by-unit membership says,
    after units are discarded (fits.kept_units takes either)."""
    from scmopt.analysis.fits import kept_units
    from scmopt.analysis.selection import _Kept, _Without

    ug = mlp[0]
    cut = next(c for c in ug.cuts.values() if len(c.unit_channels) > 8)
    names = list(cut.unit_channels)
    kept = _Kept(set(names[::2]) | {"not-a-unit"})
    kept.units_mask(cut)  # cached before the discards: they must update it
    for u in names[:6:2]:
        kept.discard(u)
    for view in (kept, _Without(kept, names[8]), _Without(kept, names[1])):
        want = np.array([u in view for u in names])
        np.testing.assert_array_equal(kept_units(cut, view), want)
        np.testing.assert_array_equal(kept_units(cut, set(u for u in names if u in view)), want)
