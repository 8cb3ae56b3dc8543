"""Metrics: the empty plan is perfect; fixed-batch models agree with batched runs."""

from __future__ import annotations

import numpy as np
import pytest
from plans import random_plan
from test_batch import merged_batch_model
from test_curvature import inputs, relu_model

from models import load_split, model_path
from scmopt.analysis.measure import Evaluator, Runner, kept_mask, measure, sites
from scmopt.evaluation.certificate import margin_bound
from scmopt.evaluation.interchange import Side, compare
from scmopt.io import graph
from scmopt.plan import Plan
from scmopt.units.analysis import analyze


@pytest.fixture(scope="module")
def cnn():
    ug = analyze(graph.load(model_path("cnn_digits")))
    split = load_split("cnn_digits", "test")
    data = {k: v[:96] for k, v in split.items() if k != "y"}
    return ug, data, split["y"][:96]


def test_empty_plan_is_perfect(cnn):
    ug, data, y = cnn
    m = measure(ug, Plan(), data, y, device="cpu")
    assert m.risk == 0.0 and m.fidelity == 1.0 and m.iia == 1.0
    assert set(m.iia_per_cut) == set(sites(ug))
    assert all(v == 1.0 for v in m.iia_per_cut.values())
    assert m.d2 == 0.0 and m.flip_bound == 0.0
    assert m.accuracy == m.accuracy_original > 0.8


def test_plan_metrics_are_deterministic_and_sane(cnn):
    ug, data, y = cnn
    runner = Runner(ug, data, device="cpu")
    plan = random_plan(ug, 0.5, seed=3)
    a = Evaluator(runner, data, y, seed=5).evaluate(plan)
    b = Evaluator(runner, data, y, seed=5).evaluate(plan)
    assert a == b
    assert a.risk > 0 and 0 <= a.fidelity <= 1 and 0 <= a.iia <= 1
    assert a.flip_bound >= 1 - a.fidelity - 1e-12  # the certificate bounds the flip rate
    plain = Evaluator(runner, data, y, seed=5).evaluate(plan, interventions=False)
    assert plain.risk is None and plain.fidelity == a.fidelity


def test_swaps_touch_kept_units_only(cnn):
    ug, data, _ = cnn
    runner = Runner(ug, data, device="cpu")
    ev = Evaluator(runner, data, seed=0)
    plan = random_plan(ug, 0.5, seed=3)
    t = sites(ug)[0]
    mask = ev.sampler.mask(t, kept_mask(ug, t, plan), slice(0, 10))
    removed = np.array([u in plan.removed for u in ug.cuts[t].units])
    assert not mask[:, removed].any() and mask[:, ~removed].any()
    assert np.all(ev.sampler.sources != np.arange(len(ev.sampler.sources)))


def test_fixed_batch_model_runs_per_sample_with_same_metrics():
    # merged_batch_model bakes the batch in a way no symbolic batch can follow (relu_model's
    # fixed [1, 6] Reshape alone is rewritten by scmopt.io.batch and runs on batches)
    fixed, dyn = analyze(merged_batch_model()), analyze(relu_model())
    x = inputs(40)
    assert not Runner(fixed, x, device="cpu").batched
    assert Runner(analyze(relu_model(fixed_batch=True)), x, device="cpu").batched
    assert Runner(dyn, x, device="cpu").batched
    plan = Plan().set_constant(fixed.cuts["h"].units[1], {"h": 0.5})
    plan.set_folded(fixed.cuts["q"].units[0], {"q": ({fixed.cuts["q"].units[2]: 0.7}, 0.1)})
    a = Evaluator(Runner(fixed, x, device="cpu"), x, batch_size=20).evaluate(plan)
    b = Evaluator(Runner(dyn, x, device="cpu", batch_size=20), x, batch_size=20).evaluate(plan)
    assert a.risk == pytest.approx(b.risk, rel=1e-5)
    assert a.iia_per_cut == b.iia_per_cut and a.fidelity == b.fidelity


def test_flip_bound():
    margins = np.array([0.1, 1.0, 2.0, 4.0])
    assert margin_bound(margins, 0.0)["bound"] == 0.0
    d2 = 0.01
    e = np.linspace(1e-3, 3, 30001)
    brute = min(1.0, min(np.mean(margins <= 2 * v) + d2 / v**2 for v in e))
    assert margin_bound(margins, d2)["bound"] == pytest.approx(brute, abs=2e-3)
    assert margin_bound(margins, 100.0)["bound"] == 1.0


def test_one_cut_checks_intervene_once_per_sample_and_do_not_depend_on_batches(cnn):
    """The search's checks: each sample is intervened on at the one cut the sampler draws for
    it; per-cut IIA then averages over that cut's samples, the risk over every member."""
    ug, data, y = cnn
    runner = Runner(ug, data, device="cpu")
    plan = random_plan(ug, 0.5, seed=3)
    full = Evaluator(runner, data, y, seed=5).evaluate(plan)
    one = Evaluator(runner, data, y, seed=5, one_cut=True).evaluate(plan)
    small = Evaluator(runner, data, y, seed=5, one_cut=True, batch_size=7).evaluate(plan)
    assert one == small  # batches only bound memory
    assert one.fidelity == full.fidelity and one.risk_plain == full.risk_plain
    cuts = sites(ug)
    at = Evaluator(runner, data, seed=5).sampler.sites(len(cuts))
    assert len(one.trials["iia"]) == len(at) == 96  # one interchange per sample
    assert set(one.iia_per_cut) == {cuts[k] for k in set(at.tolist())}
    for k, t in enumerate(cuts):  # each cut's IIA lies in the same range as its full sweep
        if (at == k).sum() >= 20:
            assert abs(one.iia_per_cut[t] - full.iia_per_cut[t]) < 0.25
    assert 0.5 * full.risk < one.risk < 2.0 * full.risk
    # with a single cut there is nothing to draw: the one-cut check is the full sweep
    single = {cuts[0]: kept_mask(ug, cuts[0], plan)}
    ev = Evaluator(runner, data, y, seed=5)
    cand = ev.runner.network(plan)
    a = compare(ev.reference, Side(cand, data, ev.sampler, ev.batches), single, y)
    b = compare(ev.reference, Side(cand, data, ev.sampler, ev.batches), single, y, one_cut=True)
    assert a.iia_per_cut == b.iia_per_cut and a.risk == pytest.approx(b.risk, rel=1e-12)


def test_capture_memory_bounds_the_batch_and_changes_no_number(cnn, monkeypatch):
    """Every site is captured at once: the batch is cut to what CAPTURE_BYTES holds (one
    sample's captures measured), and the metrics are those of the large batch."""
    from scmopt.evaluation.interchange import HookedModel

    ug, data, y = cnn
    plan = random_plan(ug, 0.5, seed=3)
    wide = Evaluator(Runner(ug, data, device="cpu"), data, y, seed=5).evaluate(plan)
    runner = Runner(ug, data, device="cpu")
    per_sample = HookedModel.CAPTURE_BYTES // runner.max_batch
    monkeypatch.setattr(HookedModel, "CAPTURE_BYTES", 10 * per_sample)
    small = Runner(ug, data, device="cpu")
    assert small.max_batch in (9, 10, 11) and small.batch_size == small.max_batch
    ev = Evaluator(small, data, y, seed=5)
    assert max(b.stop - b.start for b in ev.batches) <= small.max_batch
    assert ev.evaluate(plan) == wide
