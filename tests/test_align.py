"""Channel alignment: aligned counts, costliest removals re-kept first, compile = simulation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import outputs, relative_error, zoo
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from plans import random_plan

from models import load_split, model_path
from scmopt.analysis.align import align_plan, aligned_cuts
from scmopt.cli import main
from scmopt.compiler.compile import compile_plan
from scmopt.errors import ScmoptError
from scmopt.io import graph
from scmopt.plan import Plan
from scmopt.runtime.hooks import simulate
from scmopt.units.analysis import analyze

CONV_ZOO = ("cnn_digits", "resnet_digits", "mobile_digits")


@pytest.fixture(scope="module", params=CONV_ZOO)
def conv_model(request):
    model, feeds = zoo(request.param)
    return analyze(model), feeds


def _kept(ug, plan, t):
    return sum(u not in plan.actions for u in ug.cuts[t].units)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), block=st.sampled_from([2, 4, 8, 16]))
def test_aligned_counts_and_compile_equals_simulation(conv_model, seed, block):
    ug, feeds = conv_model
    plan = random_plan(ug, 0.6, seed=seed)
    scores = {u: float(np.random.default_rng(seed).random()) for u in plan.actions}
    out = align_plan(ug, plan, scores, block)
    out.validate(ug)
    assert aligned_cuts(ug)
    for t in aligned_cuts(ug):
        k = _kept(ug, out, t)
        assert k % block == 0 or k == ug.cuts[t].channels, (t, k)
    # only re-keeps: every remaining action is the original one
    assert set(out.actions) <= set(plan.actions)
    for u, act in out.actions.items():
        assert act.kind == plan.actions[u].kind
    compiled = compile_plan(ug, out).model
    onnx.checker.check_model(compiled, full_check=True)
    err = relative_error(outputs(compiled, feeds), outputs(simulate(ug, out), feeds))
    assert err < 1e-5


def test_costliest_removals_are_re_kept_first():
    ug = analyze(graph.load(model_path("cnn_digits")))
    t = aligned_cuts(ug)[0]
    units = list(dict.fromkeys(ug.cuts[t].units))
    plan = Plan()
    for u in units[:5]:  # 5 removed -> 27 kept of 32: 1 comes back for block 4, 5 for 16
        plan.set_constant(u, {t: np.asarray(0.0)})
    scores = {u: float(i) for i, u in enumerate(units[:5])}
    out = align_plan(ug, plan, scores, 4)
    assert set(out.actions) == set(units[:4])  # the highest score (units[4]) came back
    assert align_plan(ug, plan, scores, 16).actions == {}
    assert set(align_plan(ug, plan, scores, 1).actions) == set(units[:5])


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "16"])
def test_bad_block_raises(bad):
    ug = analyze(graph.load(model_path("cnn_digits")))
    with pytest.raises(ScmoptError, match="align"):
        align_plan(ug, random_plan(ug, 0.5), {}, bad)


def test_cli_align_writes_aligned_convolutions(tmp_path):
    data = load_split("cnn_digits", "calib")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=data["input"][:256], y=data["y"][:256])
    out = tmp_path / "small.onnx"
    res = CliRunner().invoke(main, [str(model_path("cnn_digits")), str(out), "--data",
                                    str(calib), "--keep", "0.2", "--align", "8", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    m = onnx.load(out)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    convs = [inits[n.input[1]].shape for n in m.graph.node if n.op_type == "Conv"]
    assert convs and all(s[0] % 8 == 0 for s in convs)
    args = [str(model_path("cnn_digits")), str(tmp_path / "x.onnx"), "--data", str(calib)]
    bad = CliRunner().invoke(main, [*args, "--keep", "0.2", "--align", "0"])
    assert bad.exit_code != 0 and "align" in bad.output
    assert not (tmp_path / "x.onnx").exists()
