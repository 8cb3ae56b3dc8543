"""One evaluation: the seeded sampler, the metrics, interchanges with sources from anywhere in the
split, and numbers that do not depend on --batch-size (issue 11 item 5, issue 14 items 3, 5)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from plans import random_plan
from test_curvature import inputs, relu_model

import scmopt
from models import load_split, model_path
from scmopt.analysis.measure import Evaluator, Runner, kept_mask
from scmopt.compiler.compile import compile_plan
from scmopt.errors import ScmoptError
from scmopt.evaluation import metrics as M
from scmopt.evaluation.interchange import interchange, sites
from scmopt.evaluation.sampler import InterventionSampler
from scmopt.evaluation.validate import evaluate_artifact, spread
from scmopt.io import graph
from scmopt.runtime.hooks import HookSpec, hook
from scmopt.runtime.sessions import session
from scmopt.units.analysis import analyze

# --- the sampler ---------------------------------------------------------------------------


def test_sources_are_other_samples_of_the_whole_split():
    s = InterventionSampler(1000, 0.5, seed=3)
    src = s.sources
    assert src.dtype == np.int64 and src.shape == (1000,)
    assert np.all(src != np.arange(1000)) and src.min() >= 0 and src.max() < 1000
    # far from the base: not confined to a batch around it
    assert np.mean(np.abs(src - np.arange(1000)) > 256) > 0.3
    assert np.array_equal(src, InterventionSampler(1000, 0.5, seed=3).sources)
    assert not np.array_equal(src, InterventionSampler(1000, 0.5, seed=4).sources)
    assert np.array_equal(InterventionSampler(1, 0.5, 0).sources, [0])  # nothing to swap with


def test_draws_do_not_depend_on_batching_or_order():
    kept = np.array([True, False, True, True, False, True])
    whole = InterventionSampler(50, 0.5, seed=1)
    full = whole.mask("b", kept)
    for size in (1, 7, 64):
        other = InterventionSampler(50, 0.5, seed=1)
        other.mask("a", np.ones(3, bool))  # another cut drawn first changes nothing
        parts = [other.mask("b", kept, slice(i, i + size)) for i in range(0, 50, size)]
        assert np.array_equal(np.concatenate(parts), full)
        rows = np.array([40, 3, 17])
        assert np.array_equal(other.mask("b", kept, rows), full[rows])
    assert not full[:, ~kept].any()  # removed units are never swapped
    assert 0.35 < full[:, kept].mean() < 0.65
    assert not InterventionSampler(50, 0.0, 1).mask("b", kept).any()
    assert np.array_equal(InterventionSampler(50, 1.0, 1).mask("b", kept)[0], kept)


def test_sites_and_subset():
    s = InterventionSampler(200, 0.5, seed=0)
    sub = s.subset(0.5)
    assert sub.dtype == bool and sub.sum() == 100 and np.array_equal(sub, s.subset(0.5))
    w = s.sites(3)
    assert set(np.unique(w)) == {0, 1, 2} and np.array_equal(w, s.sites(3))


# --- the metrics, by hand ------------------------------------------------------------------


def test_metric_functions_by_hand():
    ref = np.array([[3.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
    cand = np.array([[2.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    assert M.top1(ref, cand).tolist() == [1.0, 0.0, 1.0]
    assert M.agreement(ref, cand) == pytest.approx(2 / 3)
    assert M.sq_error(ref, cand).tolist() == [1.0, 5.0, 0.0]
    # E f = (4/3, 1); ||f - Ef||^2 per sample: 25/9 + 0, 16/9 + 1, 1/9 + 1
    var = (25 / 9 + 16 / 9 + 1 + 1 / 9 + 1) / 3
    assert M.output_variance(ref) == pytest.approx(var)
    assert M.plain_risk(ref, cand) == pytest.approx(2.0 / var)
    swap = {"a": np.array([1.0, 1.0, 1.0]), "b": np.array([0.0, 0.0, 3.0])}
    assert M.interventional_risk(M.sq_error(ref, cand), swap, var) == pytest.approx(
        (2.0 + 1.0 + 1.0) / 3 / var
    )
    assert M.accuracy(cand, np.array([0, 1, 0])) == pytest.approx(2 / 3)
    assert M.mean_iia({"a": 0.5, "b": 1.0}) == 0.75 and M.mean_iia({}) is None
    # a plugged-in agreement (e.g. a tolerance on the top value) is used as given
    close = lambda a, b: (np.abs(a.max(1) - b.max(1)) <= 0.5).astype(float)  # noqa: E731
    assert M.agreement(ref, cand, close) == pytest.approx(1 / 3)


def test_tally_is_independent_of_the_batch_order():
    rng = np.random.default_rng(0)
    ref, cand = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    sw_r, sw_c = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    y = rng.integers(0, 4, 20)
    out = []
    for order in (np.arange(20), rng.permutation(20)):
        t = M.Tally(20, ["c"], y)
        for rows in np.array_split(order, 6):
            t.plain(rows, ref[rows], cand[rows])
            t.swap("c", rows, sw_r[rows], sw_c[rows])
        out.append(t.metrics())
    a, b = out
    assert a == b
    var = M.output_variance(ref)
    assert a.fidelity == M.agreement(ref, cand) and a.risk_plain == pytest.approx(
        M.plain_risk(ref, cand)
    )
    assert a.iia_per_cut["c"] == M.agreement(sw_r, sw_c) and a.iia == a.iia_per_cut["c"]
    both = (np.mean(M.sq_error(ref, cand)) + np.mean(M.sq_error(sw_r, sw_c))) / 2
    assert a.risk == pytest.approx(both / var)
    assert a.accuracy == M.accuracy(cand, y) and a.accuracy_original == M.accuracy(ref, y)
    assert a.flip_bound >= 1 - a.fidelity - 1e-12  # the certificate bounds the flip rate
    assert M.Tally(20, []).metrics(interventions=False).risk is None


# --- interchanges -------------------------------------------------------------------------


def test_perturbation_equals_patching_the_source_in():
    """The delta M (mask * (a(x') - a(x))) after the plan is the patched cut M (x + mask (x' -
    x)) + B of DESIGN §2, with folds following their swapped parents."""
    ug = analyze(relu_model())
    x, n = inputs(30), 30
    plan = random_plan(ug, 0.5, seed=1, fold_prob=1.0)
    runner = Runner(ug, x, device="cpu")
    net = runner.network(plan)
    s = InterventionSampler(n, 0.5, seed=2)
    for t in sites(ug):
        mask = s.mask(t, kept_mask(ug, t, plan))
        _, base = net.run(x, capture=True)
        _, src = net.run({k: v[s.sources] for k, v in x.items()}, capture=True)
        got = interchange(net, x, base, src, {t: mask})[0]
        # reference: the patch hook, sources appended as extra rows
        specs = {c: HookSpec(plan="const") for c in ug.cuts if plan.touches(ug.cuts[c])}
        specs[t] = HookSpec(plan="const" if t in specs else "none", patch=True)
        patched = hook(ug, specs, plan)
        xx = {k: np.concatenate([v, v[s.sources]]) for k, v in x.items()}
        m = np.zeros((2 * n, ug.cuts[t].channels, 1), np.float32)
        m[:n, :, 0] = mask
        rows = np.concatenate([np.arange(n, 2 * n), np.arange(n, 2 * n)]).astype(np.int64)
        feeds = {**xx, f"{t}::mask": m, f"{t}::src": rows}
        want = session(patched.model, "cpu").run(None, feeds)[0][:n]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert not np.allclose(got, net.run(x)[0])  # the interchange changed something


def test_search_and_artifact_share_the_draws():
    """analysis.measure.Evaluator (the plan's simulation) and validate.evaluate_artifact (the
    compiled model) make the same interventions: the same IIA per cut, fidelity and risks."""
    ug = analyze(graph.load(model_path("cnn_digits")))
    split = load_split("cnn_digits", "test")
    x, y = {"input": split["input"][:96]}, split["y"][:96]
    plan = random_plan(ug, 0.5, seed=3)
    comp = compile_plan(ug, plan)
    sim = Evaluator(Runner(ug, x, device="cpu"), x, y, p=0.5, seed=4).evaluate(plan)
    art = evaluate_artifact(ug, comp.model, comp.kept_positions, x, y, p=0.5, seed=4)
    assert art.iia_per_cut == sim.iia_per_cut and art.fidelity == sim.fidelity
    assert art.accuracy == sim.accuracy
    for key in ("risk", "risk_plain", "d2"):
        assert getattr(art, key) == pytest.approx(getattr(sim, key), rel=1e-4)
    assert art.unmapped == []
    part = dict(list(comp.kept_positions.items())[1:])
    missing = evaluate_artifact(ug, comp.model, part, x, y, seed=4)
    assert missing.unmapped and missing.iia is None and missing.risk is None


def test_spread_takes_evenly_spaced_sites_first_and_last():
    cuts = [f"c{i}" for i in range(43)]
    picked = spread(cuts, 16)
    assert len(picked) == 16 and picked[0] == "c0" and picked[-1] == "c42"
    assert picked == sorted(picked, key=cuts.index)  # topological order kept
    gaps = np.diff([cuts.index(c) for c in picked])
    assert gaps.min() >= 2 and gaps.max() <= 3
    assert spread(cuts, None) == cuts and spread(cuts[:5], 16) == cuts[:5]
    assert spread(cuts, 1) == ["c0"] and spread(cuts, 2) == ["c0", "c42"]


def test_sampled_sweep_gives_the_full_sweeps_numbers_at_its_sites():
    """max_cuts sweeps fewer sites; each swept site's IIA is the full sweep's (draws seeded by
    the cut's name), plain numbers are unchanged, and the rest are listed as unmeasured."""
    ug = analyze(graph.load(model_path("mobile_digits")))
    split = load_split("mobile_digits", "test")
    x = {"input": split["input"][:64]}
    plan = random_plan(ug, 0.5, seed=1)
    comp = compile_plan(ug, plan)
    full = evaluate_artifact(ug, comp.model, comp.kept_positions, x, seed=2, plan=plan)
    part = evaluate_artifact(ug, comp.model, comp.kept_positions, x, seed=2, plan=plan,
                             max_cuts=4)  # fmt: skip
    every = sites(ug)
    assert len(every) == 11 and list(part.iia_per_cut) == spread(every, 4)
    assert part.unmeasured == [t for t in every if t not in part.iia_per_cut]
    assert full.unmeasured == [] and part.unmapped == []
    for t, v in part.iia_per_cut.items():
        assert v == full.iia_per_cut[t]
        assert part.iia_cells_per_cut[t] == full.iia_cells_per_cut[t]
    assert part.iia == pytest.approx(np.mean(list(part.iia_per_cut.values())))
    assert part.fidelity == full.fidelity and part.risk_plain == full.risk_plain
    assert part.iia != full.iia  # a mean over other sites


def test_iia_cuts_below_one_is_an_error():
    with pytest.raises(ScmoptError, match="--iia-cuts must be at least 1"):
        scmopt.compress(str(model_path("mlp_digits")), load_split("mlp_digits", "calib"),
                        keep=0.5, iia_cuts=0)  # fmt: skip


# --- --batch-size is a memory knob ---------------------------------------------------------


def _summary(res) -> dict:
    """Plan fingerprint and every reported number of a compress result."""
    plan = res.plan.to_dict()["units"]
    structure = sorted(
        (u, a["action"], sorted((t, sorted(r.get("coef", {}))) for t, r in a["at"].items()))
        for u, a in plan.items()
    )
    v = res.report["validation"]
    return {
        "plan": hashlib.sha256(json.dumps(structure).encode()).hexdigest(),
        "removed": len(plan),
        "fidelity": res.report["fidelity"],
        "iia_per_cut": v["iia_per_cut"],
        "risk": v["risk"],
        "risk_plain": v["risk_plain"],
        "search": {k: v["search"][k] for k in ("fidelity", "iia", "risk", "risk_plain")},
    }


def _same_at_every_batch_size(name: str, sizes=(1, 7, 64, 256)) -> list[dict]:
    data = {k: v for k, v in load_split(name, "calib").items() if k != "y"}
    runs = [
        _summary(scmopt.compress(str(model_path(name)), data, keep=0.5, seed=0, batch_size=b))
        for b in sizes
    ]
    first = runs[0]
    for other in runs[1:]:
        for key in ("plan", "removed", "fidelity", "iia_per_cut"):
            assert other[key] == first[key], key
        for key in ("risk", "risk_plain"):
            assert other[key] == pytest.approx(first[key], rel=1e-9), key
        for key, value in first["search"].items():
            assert other["search"][key] == pytest.approx(value, rel=1e-9), key
    return runs


def test_cnn_digits_same_plan_and_numbers_at_every_batch_size():
    runs = _same_at_every_batch_size("cnn_digits")
    # at batch 1 the interchanges really happen (sources come from the whole split)
    one = runs[0]
    iia = float(np.mean(list(one["iia_per_cut"].values())))
    assert iia != one["fidelity"] and iia < 0.95
    assert one["search"]["iia"] != one["search"]["fidelity"]


@pytest.mark.slow
def test_resnet_digits_same_plan_and_numbers_at_every_batch_size():
    _same_at_every_batch_size("resnet_digits")


def test_report_fidelity_is_the_printed_number():
    data = {k: v[:256] for k, v in load_split("cnn_digits", "calib").items()}
    res = scmopt.compress(str(model_path("cnn_digits")), data, keep=0.5, seed=0)
    rep = res.report
    assert isinstance(rep["fidelity"], float) and rep["fidelity"] == rep["validation"]["agreement"]
    doc = json.loads(json.dumps(rep.to_dict(), default=float))
    assert doc["fidelity"] == rep["fidelity"] and "accuracy" in doc and "output" not in doc
    assert set(res.kept) >= set(sites(res.unit_graph))
    again = evaluate_artifact(res.unit_graph, res.model, res.kept,
                              {"input": data["input"][:64]}, seed=1)  # fmt: skip
    assert again.unmapped == [] and 0 < again.iia <= 1
