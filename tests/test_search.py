"""The budgeted search: exact keep counts, determinism, budgets met on held-out data, errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import outputs

from models import load_split, model_path
from scmopt.analysis.search import search
from scmopt.errors import ScmoptError
from scmopt.io import graph
from scmopt.runtime.hooks import simulate
from scmopt.units.analysis import analyze


@pytest.fixture(scope="module")
def mlp():
    ug = analyze(graph.load(model_path("mlp_digits")))
    data = {k: v[:160] for k, v in load_split("mlp_digits").items()}
    return ug, data


def test_keep_gives_exact_count_and_valid_plan(mlp):
    ug, data = mlp
    res = search(ug, data, keep=0.3, seed=1, device="cpu", curvature_samples=16)
    target = round(0.3 * len(ug.prunable))
    assert res.metrics["kept"] == target
    assert len(ug.prunable) - len(res.plan.removed) == target
    res.plan.validate(ug)
    assert res.metrics["accuracy"] is not None  # labels 'y' were popped from data
    assert [r["kept"] for r in res.trajectory][-1] == target
    assert set(res.scores) == set(ug.prunable)
    assert {"stats", "curvature", "measure", "total"} <= set(res.timing)


def test_deterministic_under_seed(mlp):
    ug, data = mlp
    runs = [search(ug, data, keep=0.5, seed=3, device="cpu", curvature_samples=16)
            for _ in range(2)]  # fmt: skip
    assert runs[0].plan.to_json() == runs[1].plan.to_json()
    assert runs[0].metrics == runs[1].metrics
    other = search(ug, data, keep=0.5, seed=4, device="cpu", curvature_samples=16)
    assert other.plan.to_json() != runs[0].plan.to_json()


@pytest.mark.parametrize("rule", [{"budget": 0.05}, {"min_fidelity": 0.97}, {"min_iia": 0.9}])
def test_targets_hold_on_held_out_data(mlp, rule):
    ug, data = mlp
    seen = []
    res = search(ug, data, **rule, device="cpu", curvature_samples=16, rounds=2,
                 progress=lambda stage, done, total: seen.append(stage))  # fmt: skip
    m = res.metrics
    assert {"round", "stats", "measure"} <= set(seen)
    if "budget" in rule:
        assert m["risk"] <= rule["budget"]
    elif "min_fidelity" in rule:
        assert m["fidelity"] >= rule["min_fidelity"]
        # ... and on the split the search fitted on (the search's own split of `data`)
        n = len(next(iter(data.values())))
        perm = np.random.default_rng([0, 1]).permutation(n)
        fit = np.sort(perm[int(round(0.25 * n)) :])
        x = {k: v[fit] for k, v in data.items() if k != "y"}
        f_o = outputs(ug.model, x)[0]
        f_p = outputs(simulate(ug, res.plan), x)[0]
        assert np.mean(f_o.argmax(1) == f_p.argmax(1)) >= rule["min_fidelity"]
    else:
        assert m["iia"] >= rule["min_iia"]
    assert m["kept"] < len(ug.prunable)  # something was removed


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"keep": 0.5, "budget": 0.1},
        {"min_fidelity": 0.9, "min_iia": 0.9},
        {"keep": 0.0},
        {"keep": 1.5},
        {"keep": float("nan")},
        {"keep": True},
        {"keep": "half"},
        {"budget": -1.0},
        {"min_fidelity": 2.0},
        {"min_iia": -0.1},
        {"keep": 0.5, "criterion": "psychic"},
        {"keep": 0.5, "p": 0.0},
        {"keep": 0.5, "holdout": 1.0},
        {"keep": 0.5, "batch_size": 0},
        {"keep": 0.001},  # every cut must keep a unit
        {"keep": 0.5, "max_probes": 2},
        {"keep": 0.5, "max_probes": 8.5},
    ],
)
def test_bad_requests_raise(mlp, kwargs):
    ug, data = mlp
    with pytest.raises(ScmoptError):
        search(ug, data, device="cpu", **kwargs)


def test_bad_data_raises(mlp):
    ug, data = mlp
    with pytest.raises(ScmoptError):
        search(ug, {}, keep=0.5)
    with pytest.raises(ScmoptError):
        search(ug, {"other": data["input"]}, keep=0.5)
    with pytest.raises(ScmoptError):
        search(ug, {"input": data["input"][:3]}, keep=0.5)
    with pytest.raises(ScmoptError):
        search(ug, data, keep=0.5, labels=np.zeros(3))


def test_greedy_brute_force_baseline_on_a_tiny_model():
    from test_curvature import inputs, relu_model

    from scmopt.analysis.greedy import greedy_search

    ug = analyze(relu_model())
    res = greedy_search(ug, inputs(48), keep=0.5, device="cpu")
    assert res.metrics["kept"] == round(0.5 * len(ug.prunable))
    res.plan.validate(ug)


def test_final_refit_never_raises_held_out_risk(mlp):
    """Keep mode fits new removals toward the original's or the plan's values (the better on
    held-out data) and refits every removed unit at the end only when that lowers the risk; then
    fold/constant blends are tried, kept only when they lower it further."""
    ug, data = mlp
    res = search(ug, data, keep=0.3, seed=1, device="cpu", curvature_samples=16)
    rounds = [r for r in res.trajectory if not r.get("refit")]
    refits = [r for r in res.trajectory if r.get("refit") and "shrink" not in r]
    shrinks = [r for r in res.trajectory if "shrink" in r]
    assert 1 <= len(refits) <= 3 and all(r["kept"] == rounds[-1]["kept"] for r in refits)
    assert all(r["accepted"] for r in refits[:-1])  # refits stop at the first rejected one
    assert [r["shrink"] for r in shrinks] == [0.5, 0.0]
    assert all(r["kept"] == rounds[-1]["kept"] for r in shrinks)
    assert res.metrics["risk"] <= rounds[-1]["risk"] + 1e-12
    best = min([rounds[-1]["risk"]] + [r["risk"] for r in refits + shrinks])
    assert res.metrics["risk"] == pytest.approx(best)
    res.plan.validate(ug)


@pytest.mark.parametrize("gain", [0.0, 0.05, 1.0])
def test_final_refits_stop_after_a_small_gain(mlp, gain):
    """A refit costs a statistics pass: none follows one that lowered the held-out risk by
    less than polish_gain of it (1.0: one refit at most; 0: until one is rejected)."""
    ug, data = mlp
    res = search(ug, data, keep=0.3, seed=1, device="cpu", curvature_samples=16,
                 polish_gain=gain, shrink=())  # fmt: skip
    risks = [r["risk"] for r in res.trajectory if not r.get("refit")][-1:]
    refits = [r for r in res.trajectory if r.get("refit")]
    assert 1 <= len(refits) <= 3
    for i, r in enumerate(refits):
        if not r["accepted"]:
            assert i == len(refits) - 1  # a rejected refit is the last
            break
        risks.append(r["risk"])
        gained = risks[-2] - risks[-1] >= gain * risks[-2]
        assert gained or i == len(refits) - 1  # a small gain is the last refit
    if gain == 1.0:
        assert len(refits) == 1


def test_probe_band_is_centred_on_the_cut_off_and_capped():
    from scmopt.analysis.rules import probe_band as _band

    pre = {f"u{i:03d}": float(i) for i in range(300)}
    wide = _band(120, 0.5, 1000)(pre)
    assert wide == [f"u{i:03d}" for i in range(45, 195)]
    capped = _band(120, 0.5, 16)(pre)
    assert capped == [f"u{i:03d}" for i in range(112, 128)]


def test_probe_budget_bounds_screen_and_band_by_fpe():
    """The layer screen and the per-unit band each cost at most probe_fpe passes over the fit
    split per round: on a small fit split they shrink, on the zoo's they do not bind."""
    from scmopt.analysis.config import SearchConfig
    from scmopt.analysis.curvature import Prober
    from scmopt.analysis.measure import sites
    from scmopt.analysis.search import probe_budget

    ug = analyze(graph.load(model_path("cnn_digits")))
    data = {k: v for k, v in load_split("cnn_digits", "calib").items() if k != "y"}
    prober = Prober(ug, sites(ug), device="cpu")
    big = {k: v[:614] for k, v in data.items()}
    assert probe_budget(ug, prober, big, 32, SearchConfig()) == (None, 256)
    small = {k: v[:40] for k, v in data.items()}
    screen, cap = probe_budget(ug, prober, small, 32, SearchConfig(probe_fpe=1.0))
    assert screen is not None and 4 <= screen < 32 and 8 <= cap < 256
    # what they cost, by the same share model: within the budget (or at the floors)
    assert probe_budget(ug, prober, small, 32, SearchConfig(probe_fpe=None)) == (None, 256)
    res = search(ug, small, SearchConfig(keep=0.5, probe_fpe=1.0, device="cpu", seed=0))
    assert len(res.plan.removed) > 0


def test_a_target_rule_tries_no_prefix_below_the_minimum_step(mlp):
    """min_step: halving a failing prefix stops at this fraction of the prunable units; with
    the default (0.5%: one unit on the zoo) smaller prefixes are tried."""
    from scmopt.analysis.config import SearchConfig

    ug, data = mlp
    floor = int(0.1 * len(ug.prunable))

    def tried(min_step: float) -> list[int]:
        cfg = SearchConfig(min_fidelity=0.995, min_step=min_step, device="cpu", seed=0,
                           curvature_samples=16)  # fmt: skip
        rows = search(ug, data, cfg).trajectory[1:]
        return [r["removed"] for r in rows if r["removed"] > 0]  # refit rows remove none

    default, floored = tried(0.005), tried(0.1)
    assert min(default) < floor  # the default halves further down
    assert floored and min(floored) >= floor
