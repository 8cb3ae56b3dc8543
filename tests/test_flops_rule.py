"""The FLOPs rule (`--flops F`, analysis.flop_model): the modelled FLOPs of a plan equal the
compiled model's, and a search under the rule lands at or just under F of the original's by
risk per FLOP saved, or says it missed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import attention_block, sample
from plans import random_plan

import scmopt
from models import load_split, model_path
from scmopt import units
from scmopt.analysis.flop_model import FlopModel
from scmopt.analysis.search import search
from scmopt.cli import main
from scmopt.compiler.compile import compile_plan
from scmopt.errors import ScmoptError
from scmopt.ops import cost


def _model(ug, feeds) -> tuple[FlopModel, dict]:
    one = {k: v[:1] for k, v in feeds.items() if k != "y"}
    return FlopModel(ug, cost.model_cost(ug.model, one).macs), one


@pytest.mark.parametrize("name", ["cnn_digits", "resnet_digits", "vit_digits", "text_encoder"])
@pytest.mark.parametrize("seed", [0, 1])
def test_modelled_flops_equal_the_compiled_models(name, seed):
    """Bilinear at convs between two pruned cuts, one factor for q, k and scores of a head."""
    ug = units.analyze(onnx.load(model_path(name)))
    fm, one = _model(ug, load_split(name, "test"))
    assert fm.base == cost.count_flops(ug.model, one)
    plan = random_plan(ug, 0.5, seed=seed)
    assert fm.flops(plan.removed) == cost.count_flops(compile_plan(ug, plan).model, one)


def test_savings_are_the_flops_one_removal_saves():
    ug = units.analyze(attention_block(layers=2, seq=6))
    fm, one = _model(ug, sample(ug.model, n=1))
    saves = fm.savings(set())
    for uid in sorted(ug.prunable)[::7]:
        assert fm.base - fm.flops({uid}) == pytest.approx(saves[uid])
    heads = {saves[u] for u in ug.prunable if ug.units[u].kind == "head"}
    assert len(heads) == 1 and heads.pop() > max(saves[u] for u in ug.prunable
                                                 if ug.units[u].kind != "head")  # fmt: skip


@pytest.mark.parametrize("fraction", [0.7, 0.5])
def test_search_lands_at_the_flops_goal(block, fraction):
    ug, data = block
    fm, one = _model(ug, data)
    res = search(ug, data, flops=fraction, curvature_samples=8, polish=0)
    compiled = cost.count_flops(compile_plan(ug, res.plan).model, one)
    assert compiled <= fraction * fm.base
    smallest = min(fm.savings(set()).values())
    largest = max(fm.savings(set()).values())
    assert compiled >= fraction * fm.base - largest - smallest  # at most one unit of overshoot


def test_magnitude_criterion_lands_at_the_goal_too(block):
    ug, data = block
    fm, one = _model(ug, data)
    res = search(ug, data, flops=0.6, criterion="magnitude", curvature_samples=8, polish=0)
    assert fm.flops(res.plan.removed) <= 0.6 * fm.base


@pytest.mark.parametrize("bad, message", [
    (dict(flops=0.0), "flops must be a fraction in"),
    (dict(flops=1.5), "flops must be a fraction in"),
    (dict(flops=0.5, keep=0.5), "exactly one stopping rule"),
])  # fmt: skip
def test_bad_flops_arguments(block, bad, message):
    ug, data = block
    with pytest.raises(ScmoptError, match=message):
        search(ug, data, **bad)


def test_an_unreachable_goal_is_reported_missed():
    """Every cut keeps one unit: cnn_digits cannot go to 1% of its FLOPs."""
    data = {k: v[:160] for k, v in load_split("cnn_digits", "calib").items() if k != "y"}
    res = scmopt.compress(str(model_path("cnn_digits")), data, flops=0.01, seed=0)
    assert res.missed is not None and "above --flops 0.01" in res.missed
    assert res.report["flops"]["after"] > 0.01 * res.report["flops"]["before"]


def test_cli_flops_and_keep_together_is_an_error(tmp_path):
    calib = tmp_path / "c.npz"
    np.savez(calib, **{k: v[:32] for k, v in load_split("cnn_digits", "calib").items()})
    args = [str(model_path("cnn_digits")), str(tmp_path / "o.onnx"), "--data", str(calib),
            "--flops", "0.5", "--keep", "0.5"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "give one of" in res.output and "--flops" in res.output


def test_per_flop_ranking_removes_more_flops_at_the_same_count():
    """keep 0.5 of cnn_digits: a conv channel saves 19,584 FLOPs, a dense neuron 532 or 9,728;
    ranked per FLOP the same number of removals saves more."""
    ug = units.analyze(onnx.load(model_path("cnn_digits")))
    data = {k: v[:256] for k, v in load_split("cnn_digits", "calib").items() if k != "y"}
    fm, _ = _model(ug, data)
    plain = search(ug, data, keep=0.5, curvature_samples=8, polish=0)
    per = search(ug, data, keep=0.5, curvature_samples=8, polish=0, per_flop=True)
    assert len(per.plan.removed) == len(plain.plan.removed)
    assert fm.flops(per.plan.removed) < fm.flops(plain.plan.removed)
