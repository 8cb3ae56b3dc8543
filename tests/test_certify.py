"""--certify / --delta, the default rule and exit 4 (issue 14 items 1, 2, 5)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import scmopt
from models import load_split, zoo_dir
from scmopt.cli import main

CNN = "example:cnn_digits"


def _data(name: str, split: str) -> dict[str, np.ndarray]:
    return dict(load_split(name, split))


def test_api_without_a_rule_uses_the_cli_default():
    res = scmopt.compress(str(zoo_dir() / "mlp_digits.onnx"), _data("mlp_digits", "calib"))
    assert res.report["settings"]["min_fidelity"] == 0.99
    assert res.missed is None and res.report["fidelity"] >= 0.99


def test_a_missed_rule_is_a_warning_and_exit_4(tmp_path, monkeypatch):
    """A rule still missed after the stricter searches and the walk back: warning, exit 4,
    OUT written."""
    import scmopt.api
    import scmopt.artifact

    searches, built = [], []
    real_search = scmopt.api._search

    def search(*args, **kw):
        searches.append(kw["min_fidelity"])
        return real_search(*args, **kw)

    def missed(m, *args):
        built.append(m.fidelity)
        return f"target missed on the validation split: fidelity {m.fidelity:.4f} < 1.01"

    monkeypatch.setattr(scmopt.api, "_search", search)
    monkeypatch.setattr(scmopt.artifact, "missed", missed)
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(main, [CNN, str(out), "--data", CNN, "--min-fidelity", "0.9", "-q"])
    assert res.exit_code == 4, res.output
    assert "warning: target missed on the validation split" in res.output
    assert out.exists()
    # the first search, stricter ones while they gain on the validation split (at most three)
    assert 1 <= len(searches) <= 4 and searches == sorted(searches)
    assert searches[1:] == pytest.approx([1 - 0.1 * 0.5**k for k in range(1, len(searches))])
    assert len(built) > len(searches)  # and the walk back built earlier rounds' plans


def _nested_search(monkeypatch, keep: float):
    """api._search replaced by a keep search (4 rounds: 4 nested checkpoints) whatever the
    rule; returns the list of results it handed out."""
    import scmopt.api

    real_search = scmopt.api._search
    results = []

    def search(*args, **kw):
        kw.update(min_fidelity=None, keep=keep, rounds=4, checkpoints=True)
        results.append(real_search(*args, **kw))
        return results[-1]

    monkeypatch.setattr(scmopt.api, "_search", search)
    return results


def test_a_missed_target_walks_back_to_a_round_that_meets_it(monkeypatch):
    """The searched plan (keep 0.05 of cnn_digits) misses --min-fidelity 0.99: the stricter
    search returns the same plan, so compress walks back to the latest round's plan that meets
    the rule on the validation split, and compiles that plan."""
    results = _nested_search(monkeypatch, 0.05)
    calib = _data("cnn_digits", "calib")
    res = scmopt.compress(str(zoo_dir() / "cnn_digits.onnx"), calib, min_fidelity=0.99)
    found = results[-1]
    assert len(found.checkpoints) == 4
    removed = [len(c.plan.removed) for c in found.checkpoints]
    assert removed == sorted(removed) and len(set(removed)) == 4  # nested, growing
    assert res.missed is None and res.report["fidelity"] >= 0.99
    assert any("walked back to round" in n for n in res.notes), res.notes
    chosen = [c for c in found.checkpoints if c.plan.to_json() == res.plan.to_json()]
    assert chosen and 0 < len(res.plan.removed) < len(found.plan.removed)
    # the report's search metrics are that round's
    assert res.report["validation"]["search"]["round"] == chosen[0].row["round"]


def test_walk_back_bisects_to_a_boundary():
    """walk_back returns a checkpoint that meets the rule whose successor (if any) misses it,
    after at most ceil(log2(k + 1)) builds of k checkpoints."""
    import math

    from scmopt import artifact
    from scmopt.analysis.search import SearchResult
    from scmopt.api import resolve_metric
    from scmopt.io import graph
    from scmopt.ops import cost
    from scmopt.units.analysis import analyze

    ug = analyze(graph.load(zoo_dir() / "cnn_digits.onnx"))
    calib = _data("cnn_digits", "calib")
    feeds = {k: v for k, v in calib.items() if k != "y"}
    found = scmopt.api._search(ug, feeds, criterion="curvature", keep=0.1, rounds=4,
                               fold=True, seed=0, checkpoints=True)  # fmt: skip
    assert not scmopt.api._search(
        ug, feeds, criterion="curvature", keep=0.1, rounds=2
    ).checkpoints  # none kept without a target
    val = {k: v[:200] for k, v in feeds.items()}
    metric, _ = resolve_metric(ug.model, val, None)
    v = artifact.Validation(cost.model_cost(ug.model, {k: x[:1] for k, x in val.items()}),
                            val, None, 256, "cpu", 1e-4, 0.5, 0, metric)  # fmt: skip
    fids = [artifact.build(ug, c.plan, found.scores, None, v).metrics.fidelity
            for c in found.checkpoints]  # fmt: skip
    k = len(fids)
    for threshold in sorted(set(fids)):
        back = artifact.walk_back(ug, SearchResult(found.plan, checkpoints=found.checkpoints),
                                  None, v, lambda m, t=threshold: None if m.fidelity >= t
                                  else "miss")  # fmt: skip
        assert back is not None
        point, built, builds = back
        i = found.checkpoints.index(point)
        assert built.metrics.fidelity == fids[i] >= threshold
        assert i == k - 1 or fids[i + 1] < threshold
        assert builds <= math.ceil(math.log2(k + 1))
    nothing = artifact.walk_back(ug, found, None, v, lambda m: "always")
    assert nothing is None


def test_an_unreachable_certificate_is_refused_before_the_search(tmp_path):
    """205 validation samples that all agree certify 0.9805 at delta 0.05: 0.999 is refused."""
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(main, [CNN, str(out), "--data", CNN, "--certify", "0.999"])
    assert res.exit_code == 2, res.output
    assert "cannot be reached with 205 validation samples" in res.output and "0.9805" in res.output
    assert not out.exists()


def test_certify_refuses_a_second_rule_and_bad_values(tmp_path):
    out = str(tmp_path / "o.onnx")
    res = CliRunner().invoke(main, [CNN, out, "--data", CNN, "--certify", "0.9", "--keep", "0.5"])
    assert res.exit_code == 2 and "--certify" in res.output
    res = CliRunner().invoke(main, [CNN, out, "--data", CNN, "--certify", "1.5"])
    assert res.exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp_digits", "cnn_digits", "resnet_digits", "mobile_digits",
                                  "equality_mlp"])  # fmt: skip
def test_certify_095_holds_on_the_test_split(name):
    res = scmopt.compress(str(zoo_dir() / f"{name}.onnx"), _data(name, "calib"), certify=0.95)
    conf = res.report["validation"]["confidence"]["fidelity"]
    assert res.missed is None and conf["lower"] >= 0.95 and conf["trials"] == 205
    test = _data(name, "test")
    feeds = {k: v for k, v in test.items() if k != "y"}
    ref = ort.InferenceSession(str(zoo_dir() / f"{name}.onnx")).run(None, feeds)[0]
    sess = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 0.95
