"""The abstraction's alignment: cells from the plan, and the cell-aligned IIA it gives (exact
when a folded unit is an exact copy of its kept parent), in the report and the summary."""

from __future__ import annotations

import json

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import helper, numpy_helper

from scmopt.cli import main
from scmopt.compiler.compile import compile_plan
from scmopt.evaluation import cells, validate
from scmopt.plan import Plan
from scmopt.units.analysis import analyze


def duplicate_unit_mlp() -> onnx.ModelProto:
    """x[N,6] -> fc1 (6->4) -> Relu = h -> fc2 (4->5) = y, where h's unit 2 is an exact copy of
    unit 0 (same weights), so folding 2 onto 0 with coefficient 1 changes nothing."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(6, 4)).astype(np.float32)
    w1[:, 2] = w1[:, 0]
    w2 = rng.normal(size=(4, 5)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="fc1"),
             helper.make_node("Relu", ["a"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="fc2")]  # fmt: skip
    g = helper.make_graph(
        nodes, "dup", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_parents_extend_and_cells_follow_the_largest_coefficient():
    ug = analyze(duplicate_unit_mlp())
    cut = ug.cuts["h"]
    u = cut.units
    plan = Plan().set_folded(u[2], {"h": ({u[0]: 0.2, u[1]: -0.9}, 0.1)})
    plan.set_constant(u[3], {"h": 0.5})
    assert cells.parents(ug, plan)["h"].tolist() == [-1, -1, 1, -1]
    assert cells.cells(ug, plan) == {"h": {u[1]: [u[2]]}}
    mask = np.array([[True, False, False, True], [False, True, False, False]])
    assert cells.extend(mask, cells.parents(ug, plan)["h"]).tolist() == [
        [True, False, False, True], [False, True, True, False]]  # fmt: skip
    assert cells.parents(ug, Plan().set_constant(u[3], {"h": 0.5})) == {}


def test_cell_aligned_iia_is_exact_for_an_exact_fold():
    ug = analyze(duplicate_unit_mlp())
    u = ug.cuts["h"].units
    plan = Plan().set_folded(u[2], {"h": ({u[0]: 1.0}, 0.0)})
    compiled = compile_plan(ug, plan)
    x = {"x": np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)}
    m = validate.evaluate_artifact(ug, compiled.model, compiled.kept_positions, x, plan=plan)
    assert m.fidelity == 1.0 and m.iia_cells == 1.0 and m.iia_cells_per_cut == {"h": 1.0}
    assert m.iia < 0.99  # singleton: unit 2 keeps its base value in the original
    # without the plan no cells are measured; without folds the cells are the kept units
    assert validate.evaluate_artifact(ug, compiled.model, compiled.kept_positions,
                                      x).iia_cells is None  # fmt: skip
    const = Plan().set_constant(u[2], {"h": 0.3})
    c = compile_plan(ug, const)
    mc = validate.evaluate_artifact(ug, c.model, c.kept_positions, x, plan=const)
    assert mc.iia_cells == mc.iia


def test_cells_reach_the_summary_and_the_reports(tmp_path):
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(main, ["example:cnn_digits", str(out), "--data",
                                    "example:cnn_digits", "--keep", "0.5", "--fold-parents", "1",
                                    "--report", str(tmp_path / "r.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "IIA, cells" in res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    v = doc["validation"]
    assert v["iia_cells"] is not None and set(v["iia_cells_per_cut"]) == set(v["iia_per_cut"])
    assert doc["settings"]["fold_parents"] == 1
    members = [m for c in doc["cells"].values() for ms in c.values() for m in ms]
    folded = {k for k, a in doc["plan"]["units"].items() if a["action"] == "folded"}
    assert folded and set(members) == folded  # every folded unit is in a cell
    res = CliRunner().invoke(main, ["example:cnn_digits", str(tmp_path / "p.onnx"), "--data",
                                    "example:cnn_digits", "--keep", "0.5",
                                    "--report", str(tmp_path / "r.html")])  # fmt: skip
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    assert "Alignment (cells)" in page and "cell-aligned IIA" in page
