"""--metric: each agreement's numbers, its refusals, the default chosen from the output's shape,
and the metric reaching the search, the validation, the bounds, the CLI and `validate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from scmopt import api
from scmopt.cli import main
from scmopt.errors import ScmoptError
from scmopt.evaluation import agreements as A
from scmopt.evaluation import confidence
from scmopt.evaluation.metrics import Tally
from tests import graphs


def score(spec: str, ref, cand, shape=None) -> list[float]:
    m = A.parse(spec)
    if shape is not None:
        m = m.bind(shape)
    return m(np.asarray(ref, float), np.asarray(cand, float)).round(6).tolist()


def test_top1_topk_within():
    ref = [[0, 5, 4, 1], [3, 0, 0, 0], [0, 0, 0, 9]]
    cand = [[0, 4, 5, 1], [3, 0, 0, 0], [0, 9, 0, 0]]
    assert score("top1", ref, cand) == [0.0, 1.0, 0.0]
    assert score("topk:2", ref, cand) == [1.0, 1.0, 0.0]  # bin 2 is in the reference's top 2
    assert score("within:1", ref, cand) == [1.0, 1.0, 0.0]  # bins 1 vs 2; 3 vs 1
    assert score("within:3", ref, cand) == [1.0, 1.0, 1.0]
    assert A.parse("topk").arg == 5 and A.parse("topk").spec == "topk:5"


def test_token_top1_scores_the_fraction_of_positions():
    ref = np.zeros((2, 4, 3))
    ref[:, :, 0] = 1.0
    cand = ref.copy()
    cand[0, 1, 2] = 5.0  # one of four positions flips in sample 0
    cand[1, :, 1] = 5.0  # all four flip in sample 1
    flat = lambda a: a.reshape(2, -1)  # noqa: E731 - outputs reach metrics flattened
    assert score("token-top1", flat(ref), flat(cand), (4, 3)) == [0.75, 0.0]


def test_token_top1_counts_only_the_real_tokens_of_a_padding_mask():
    """Padding positions of a [B, T] mask do not count: a flip there changes nothing, a flip at
    a real token counts over the real tokens only; a mask of another T (a [CLS] added to the
    output) leaves every position counted."""
    ref = np.zeros((3, 4, 3))
    ref[:, :, 0] = 1.0
    cand = ref.copy()
    cand[0, 3, 2] = 5.0  # sample 0 flips at its padding position
    cand[1, 0, 2] = 5.0  # sample 1 flips at a real token (2 real tokens)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], float)
    m = A.parse("token-top1").bind((4, 3))
    flat = lambda a: a.reshape(3, -1)  # noqa: E731
    assert m(flat(ref), flat(cand), mask).tolist() == [1.0, 0.5, 1.0]
    assert m(flat(ref), flat(cand)).tolist() == [0.75, 0.75, 1.0]
    assert m(flat(ref), flat(cand), np.ones((3, 5))).tolist() == [0.75, 0.75, 1.0]
    t = Tally(3, [], metric=m, positions=mask)
    t.plain(slice(0, 3), flat(ref), flat(cand))
    assert t.metrics(interventions=False).fidelity == pytest.approx(2.5 / 3)
    top = Tally(3, [], metric=A.parse("top1"), positions=mask)  # other metrics ignore it
    top.plain(slice(0, 3), flat(ref), flat(cand))
    assert top.metrics(interventions=False).fidelity == pytest.approx(1 / 3)


def test_cosine_and_rel_mse():
    ref = [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]]
    cand = [[1.0, 0.0], [-1.0, -1.0], [0.0, 0.0], [1.0, 0.0]]
    assert score("cosine", ref, cand) == [1.0, 0.0, 1.0, 1.0]  # opposite clipped at 0
    # 1 - ||f - f~||^2 / ||f||^2: exact, 1 - 8 / 2 clipped, zero == zero, 1 - 1/4
    assert score("rel-mse", ref, cand) == [1.0, 0.0, 1.0, 0.75]


def _head(boxes, scores) -> np.ndarray:
    """[1, 8, 6]: the given (cx, cy, w, h) boxes and 2 class scores, then quiet anchors (a
    head has more anchors than attributes: that is how its orientation is read)."""
    h = np.concatenate([np.asarray(boxes, float), np.asarray(scores, float)], 1)
    quiet = np.tile([[70.0, 70.0, 4.0, 4.0, 0.0, 0.0]], (8 - len(h), 1))
    return np.concatenate([h, quiet])[None]


def test_detection_matches_confident_anchors_in_class_and_box():
    boxes = [[10, 10, 4, 4], [30, 30, 4, 4], [50, 50, 4, 4]]
    scores = [[0.9, 0.0], [0.0, 0.8], [0.1, 0.1]]  # anchor 2 is not confident
    ref = _head(boxes, scores)
    assert score("detection", ref.reshape(1, -1), ref.reshape(1, -1), (8, 6)) == [1.0]
    moved = _head([[10, 10, 4, 4], [34, 34, 4, 4], [50, 50, 4, 4]], scores)  # IoU 1/7
    assert score("detection", ref.reshape(1, -1), moved.reshape(1, -1), (8, 6)) == [0.5]
    relabel = _head(boxes, [[0.0, 0.9], [0.0, 0.8], [0.1, 0.1]])
    assert score("detection", ref.reshape(1, -1), relabel.reshape(1, -1), (8, 6)) == [0.5]
    # attributes first ([B, N, A], as YOLOv8 exports): the same scores
    t = np.swapaxes(ref, 1, 2).reshape(1, -1)
    assert score("detection", t, np.swapaxes(moved, 1, 2).reshape(1, -1), (6, 8)) == [0.5]
    quiet = _head(boxes, np.zeros((3, 2)))
    assert score("detection", quiet.reshape(1, -1), quiet.reshape(1, -1), (8, 6)) == [1.0]


def test_scores_do_not_depend_on_the_batch():
    rng = np.random.default_rng(0)
    ref, cand = rng.normal(size=(40, 12)), rng.normal(size=(40, 12))
    for spec in ("top1", "topk:3", "within:2", "cosine", "rel-mse"):
        whole = A.parse(spec)(ref, cand)
        parts = np.concatenate([A.parse(spec)(ref[i : i + 7], cand[i : i + 7])
                                for i in range(0, 40, 7)])  # fmt: skip
        np.testing.assert_array_equal(whole, parts)
        assert ((whole >= 0) & (whole <= 1)).all()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("f1", "unknown metric"), ("top1:3", "takes no argument"), ("topk:0", "whole number"),
     ("within:1.5", "whole number"), ("detection:2", "(0, 1)"), ("topk:x", "not a number")],
)  # fmt: skip
def test_bad_specs_name_the_flag(spec, fragment):
    with pytest.raises(ScmoptError, match="--metric") as e:
        A.parse(spec)
    assert fragment in str(e.value)


def test_bind_refuses_outputs_the_metric_cannot_read():
    with pytest.raises(ScmoptError, match=r"token-top1 needs a \[B, T, K\] output, not \[B, 10\]"):
        A.parse("token-top1").bind((10,))
    with pytest.raises(ScmoptError, match="detection needs"):
        A.parse("detection").bind((3, 4))


@pytest.mark.parametrize(
    ("shape", "name"),
    [((10,), "top1"), ((7, 20), "token-top1"), ((84, 8400), "detection"), ((8400, 85), "detection"),
     ((1,), "rel-mse"), ((), "rel-mse"), ((2, 16, 16), "rel-mse")],
)  # fmt: skip
def test_default_from_the_output_shape(shape, name):
    m, why = A.choose(shape)
    assert m.name == name and m.shape == shape and why


def test_graded_trials_get_bounds_and_out_of_range_is_refused():
    x = np.full(400, 0.9)
    b = confidence.certify(x, 0.05)
    assert b.point == pytest.approx(0.9) and 0.8 < b.lower < 0.9 and 0 < b.hoeffding < 0.9
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        confidence.certify(np.array([0.5, 1.5]))


def test_tally_reports_the_metric_and_the_5th_percentile():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(50, 8))
    cand = ref + rng.normal(scale=0.3, size=ref.shape)
    m = Tally(50, [], metric=A.parse("cosine")).metrics(interventions=False)
    assert m.metric == "cosine"
    t = Tally(50, [], metric=A.parse("cosine"))
    t.plain(slice(0, 50), ref, cand)
    m = t.metrics(interventions=False)
    per = A.parse("cosine")(ref, cand)
    assert m.fidelity == pytest.approx(per.mean()) and m.fidelity_p5 == pytest.approx(
        np.percentile(per, 5)
    )
    assert m.certificate == {}  # the top-1 margin bound says nothing about cosine
    assert "fidelity" in m.confidence(0.05)


def test_compress_picks_token_top1_for_a_token_classifier_and_compiles_exactly():
    model = graphs.transformer_ffn(tokens=True)
    data = graphs.sample(model, n=120, seed=3)
    res = api.compress(model, data, keep=0.5, device="cpu")
    assert res.report["settings"]["metric"] == "token-top1"
    assert "[B, 5, 4]" in res.report["settings"]["metric_why"]
    v = res.report["validation"]
    assert v["metric"] == "token-top1" and 0 <= v["agreement_p5"] <= v["agreement"] <= 1
    assert res.report["compile_max_abs_error"] < 1e-4
    # the rule is judged with the same metric: a fidelity target under rel-mse holds on it
    held = api.compress(model, data, min_fidelity=0.9, metric="rel-mse", device="cpu")
    assert held.report["validation"]["metric"] == "rel-mse"
    assert held.missed is None and held.report["fidelity"] >= 0.9


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_metric_reaches_summary_report_and_validate(tmp_path):
    out, rep = tmp_path / "small.onnx", tmp_path / "r.json"
    res = run("example:cnn_digits", str(out), "--data", "example:cnn_digits", "--keep", "0.5",
              "--metric", "within:1", "--report", str(rep))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "metric: within:1 for output 'logits' (--metric)" in res.output
    assert "(within:1, validation split" in res.output
    doc = json.loads(rep.read_text())
    assert doc["settings"]["metric"] == "within:1" and doc["validation"]["metric"] == "within:1"
    # validate takes the metric the model was made with from its metadata
    val = run("validate", "example:cnn_digits", str(out), "--data", "example:cnn_digits")
    assert val.exit_code == 0, val.output
    assert "metric: within:1" in val.output and "fidelity (within:1)" in val.output


def test_cli_default_metric_line_and_bad_metric_exit_2(tmp_path):
    res = run("example:cnn_digits", str(tmp_path / "o.onnx"), "--data", "example:cnn_digits",
              "--metric", "f1")  # fmt: skip
    assert res.exit_code == 2 and "--metric 'f1': unknown metric" in res.output
    assert not (tmp_path / "o.onnx").exists() and "Traceback" not in res.output
    res = run("example:cnn_digits", str(tmp_path / "o.onnx"), "--data", "example:cnn_digits",
              "--metric", "token-top1")  # fmt: skip
    assert res.exit_code == 2 and "token-top1 needs a [B, T, K] output" in res.output


def _masked_token_classifier(flip_padding: bool):
    """x[B, 4, 3] -> MatMul(W) -> logits [B, 4, 3], with an `attention_mask` [B, 4] input; the
    `flip_padding` variant adds 10 to class 2 at the padding positions only."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj")]
    inits = [w]
    if flip_padding:
        inits += [numpy_helper.from_array(np.array([0, 0, 10], np.float32), "bump"),
                  numpy_helper.from_array(np.array([2], np.int64), "ax"),
                  numpy_helper.from_array(np.array(1.0, np.float32), "one")]  # fmt: skip
        nodes += [helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["one", "m"], ["pad"]),
                  helper.make_node("Unsqueeze", ["pad", "ax"], ["pad3"]),
                  helper.make_node("Mul", ["pad3", "bump"], ["shift"]),
                  helper.make_node("Add", ["h", "shift"], ["y"])]  # fmt: skip
    else:
        nodes += [helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
                  helper.make_node("Identity", ["h"], ["y"])]  # fmt: skip
    g = helper.make_graph(
        nodes, "tok", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4, 3]),
                       helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                                     ["B", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4, 3])], inits,
    )  # fmt: skip
    return onnx.helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_validation_of_a_token_classifier_ignores_flips_at_padding():
    """The compiled-artifact check (evaluate_artifact -> interchange.compare) reads the padding
    mask from the data: a candidate that differs only at padding tokens agrees fully."""
    from scmopt.evaluation.validate import evaluate_artifact
    from scmopt.units.analysis import analyze

    rng = np.random.default_rng(0)
    n = 40
    mask = (np.arange(4)[None] < rng.integers(1, 5, n)[:, None]).astype(np.int64)
    mask[0] = 1
    feeds = {"x": rng.standard_normal((n, 4, 3)).astype(np.float32), "attention_mask": mask}
    ug = analyze(_masked_token_classifier(False))
    metric = A.parse("token-top1").bind((4, 3))
    m = evaluate_artifact(ug, _masked_token_classifier(True), None, feeds, metric=metric,
                          interventions=False)  # fmt: skip
    assert m.fidelity == 1.0
    # without the mask the padding positions whose class was not already 2 disagree
    ref, cand = (_run(mm, feeds) for mm in (ug.model, _masked_token_classifier(True)))
    flips = ((mask == 0) & (ref.argmax(-1) != 2)).mean(1)
    unmasked = metric(ref.reshape(n, -1), cand.reshape(n, -1)).mean()
    assert flips.mean() > 0.2 and unmasked == pytest.approx(1 - flips.mean())


def _run(model, feeds):
    return _run_all(model, feeds)[0]


def _run_all(model, feeds):
    from scmopt.runtime.sessions import session

    return session(model).run(None, feeds)


def _with_second_outputs():
    """cnn_digits plus two outputs computed from its logits: softmax probabilities (top-1 the
    same as the logits') and their squared norm per sample (a scalar: rel-mse)."""
    import onnx
    from onnx import helper

    from tests.helpers import zoo

    model, data = zoo("cnn_digits", n=400)
    logits = model.graph.output[0].name
    model.graph.node.extend([
        helper.make_node("Softmax", [logits], ["probs"], axis=-1),
        helper.make_node("Mul", [logits, logits], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis1"], ["energy"], keepdims=0),
    ])  # fmt: skip
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    model.graph.output.extend([
        helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["batch", 10]),
        helper.make_tensor_value_info("energy", onnx.TensorProto.FLOAT, ["batch"]),
    ])  # fmt: skip
    return model, data


def test_outputs_the_search_does_not_read_are_judged_and_reported():
    model, data = _with_second_outputs()
    res = api.compress(model, data, keep=0.3, device="cpu")
    others = {o["output"]: o for o in res.report["validation"]["other_outputs"]}
    assert set(others) == {"probs", "energy"}
    assert others["probs"]["metric"] == "top1" and others["energy"]["metric"] == "rel-mse"
    # softmax keeps the argmax: the same agreement as the analysed logits
    assert others["probs"]["agreement"] == pytest.approx(res.report["fidelity"])
    assert 0.0 <= others["energy"]["agreement"] <= 1.0
    lines = [n for n in res.report["notes"] if "not analysed" in n]
    assert len(lines) == 2 and all("--output to change" in n for n in lines)
    # the compiled model keeps every output, each equal to the plan's simulation
    assert [o.name for o in res.model.graph.output][1:] == ["probs", "energy"]
    energy = _run_all(res.model, {k: v[:50] for k, v in data.items()})[2]
    assert res.report["compile_max_abs_error"] < 1e-5 * max(1.0, float(np.abs(energy).max()))


def test_a_second_output_below_the_fidelity_rule_gets_a_warning():
    lines = api._other_output_notes(
        [{"output": "boxes", "metric": "rel-mse", "agreement": 0.9}], "scores", 0.97
    )
    assert lines[0].startswith("warning: output 'boxes'")
    assert "below --min-fidelity 0.97" in lines[0]
    assert not api._other_output_notes(
        [{"output": "boxes", "metric": "rel-mse", "agreement": 0.99}], "scores", 0.97
    )[0].startswith("warning")


def test_validate_lists_every_output(tmp_path):
    import onnx

    model, data = _with_second_outputs()
    res = api.compress(model, data, keep=0.3, device="cpu")
    a, b, d = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "d.npz"
    onnx.save(model, a)
    res.save(b)
    np.savez(d, **data)
    out = run("validate", str(a), str(b), "--data", str(d), "--runs", "2")
    assert out.exit_code == 0, out.output
    assert "probs (top1)" in out.output and "energy (rel-mse)" in out.output
