"""End-to-end CLI: compress, inspect, validate, and every bad-input case (exit 2, one line)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from models import load_split, model_path
from scmopt.cli import main

CNN = str(model_path("cnn_digits"))


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("data")
    path = d / "calib.npz"
    data = load_split("cnn_digits", "calib")
    np.savez(path, input=data["input"][:256], y=data["y"][:256])
    return str(path)


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_usage_error(res, fragment: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], res.output
    assert "Traceback" not in res.output


# --- inspect ------------------------------------------------------------------------------


def test_inspect_lists_groups_params_and_flops():
    res = run("inspect", CNN)
    assert res.exit_code == 0
    assert "35,914 parameters" in res.output and "660,736 FLOPs" in res.output
    assert "160 prunable (100.0%)" in res.output


def test_inspect_counts_the_files_parameters_of_a_compiled_model(tmp_path):
    """A compiled model computes the border maps of constant conv channels at run time
    (ConstantOfShape -> Conv); canonicalisation folds them into full maps. inspect reports what
    the file stores, the number compress reported for it."""
    from plans import random_plan

    from scmopt import units
    from scmopt.compiler.compile import compile_plan
    from scmopt.io.graph import canonicalize
    from scmopt.ops.cost import count_params

    ug = units.analyze(onnx.load(CNN))
    plan = random_plan(ug, 0.5, seed=0, fold_prob=0.0, per_position_prob=0.0)
    compiled = compile_plan(ug, plan).model
    assert count_params(canonicalize(compiled)) > count_params(compiled)  # what inspect showed
    path = tmp_path / "c.onnx"
    onnx.save(compiled, path)
    info = json.loads(run("inspect", str(path), "--json").output)
    assert info["params"] == count_params(compiled)


def test_inspect_json():
    info = json.loads(run("inspect", CNN, "--json").output)
    assert info["units"] == 160 and len(info["groups"]) == 3


def _tiny_model(tmp_path, middle: list, opset: int = 17) -> str:
    """x[N,4] -> MatMul -> <middle ops on h> -> MatMul -> y[N,3]."""
    w1 = numpy_helper.from_array(np.ones((4, 5), np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((5, 3), np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), *middle,
             helper.make_node("MatMul", ["m", "w2"], ["y"])]  # fmt: skip
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
        [w1, w2],
    )  # fmt: skip
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return str(path)


def test_unsupported_op_freezes_units_and_lists_them(tmp_path):
    path = _tiny_model(tmp_path, [helper.make_node("Softmax", ["h"], ["m"], axis=1)])
    res = run("inspect", path)
    assert res.exit_code == 0
    assert "5 frozen" in res.output and "Softmax" in res.output


def test_control_flow_is_frozen_not_fatal(tmp_path):
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, ["N", 5])],
    )  # fmt: skip
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, ["N", 5])],
    )  # fmt: skip
    # the condition depends on the input, so constant folding cannot remove the If
    reduce = helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)
    zero = helper.make_node("Constant", [], ["z"], value=helper.make_tensor("z", 1, [], [0.0]))
    cond = helper.make_node("Greater", ["s", "z"], ["c"])
    if_node = helper.make_node("If", ["c"], ["m"], then_branch=then_g, else_branch=else_g)
    # h also feeds a linear consumer, so it is a cut whose units the If reads implicitly
    extra = helper.make_node("MatMul", ["h", "w3"], ["y2"])
    path = _tiny_model(tmp_path, [reduce, zero, cond, if_node, extra])
    model = onnx.load(path)
    model.graph.initializer.append(numpy_helper.from_array(np.ones((5, 2), np.float32), "w3"))
    model.graph.output.append(helper.make_tensor_value_info("y2", onnx.TensorProto.FLOAT, ["N", 2]))
    onnx.save(model, path)
    res = run("inspect", path)
    assert res.exit_code == 0, res.output
    assert "read inside If" in res.output and "come from If" in res.output


# --- bad input ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert_usage_error(run("inspect", str(tmp_path / "nope.onnx")), "no such file")


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    assert_usage_error(run("inspect", str(bad)), "not")


def test_model_failing_checker(tmp_path):
    model = onnx.load(CNN)
    model.graph.node[0].input[1] = "does_not_exist"
    path = tmp_path / "broken.onnx"
    onnx.save(model, path)
    assert_usage_error(run(CNN, str(tmp_path / "o.onnx"), "--data", CNN), "")
    assert_usage_error(run("inspect", str(path)), "checker")


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: {"a": d["input"], "b": d["input"]}, "no array for model input"),
        (lambda d: {"input": d["input"][:, :, :4]}, "shape"),
        (lambda d: {"input": d["input"].astype(np.complex64)}, "dtype"),
        (
            lambda d: {
                "input": np.where(np.arange(64).reshape(1, 1, 8, 8) == 3, np.nan, d["input"])
            },
            "NaN",
        ),  # fmt: skip
        (
            lambda d: {
                "input": np.where(np.arange(64).reshape(1, 1, 8, 8) == 3, np.inf, d["input"])
            },
            "NaN or Inf",
        ),  # fmt: skip
    ],
    ids=["missing-input", "wrong-shape", "wrong-dtype", "nan", "inf"],
)
def test_bad_data(tmp_path, mutate, fragment):
    data = load_split("cnn_digits", "calib")
    path = tmp_path / "bad.npz"
    np.savez(path, **mutate({"input": data["input"][:32]}))
    out = tmp_path / "out.onnx"
    assert_usage_error(run(CNN, str(out), "--data", str(path), "--keep", "0.5"), fragment)
    assert not out.exists()


def test_unreadable_data(tmp_path):
    path = tmp_path / "x.npz"
    path.write_text("not numpy")
    assert_usage_error(run(CNN, str(tmp_path / "o.onnx"), "--data", str(path)), "numpy")


def test_output_equal_to_input_is_refused(tmp_path, calib):
    model = tmp_path / "m.onnx"
    model.write_bytes(open(CNN, "rb").read())
    before = model.read_bytes()
    assert_usage_error(run(str(model), str(model), "--data", calib), "same file")
    assert model.read_bytes() == before


def test_two_stopping_rules(tmp_path, calib):
    res = run(CNN, str(tmp_path / "o.onnx"), "--data", calib, "--keep", "0.5", "--budget", "0.1")
    assert_usage_error(res, "one of")


def test_traceback_only_with_verbose(tmp_path):
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope.onnx"), "-v"])
    assert res.exit_code == 2 and "Traceback" in res.output


@pytest.mark.parametrize("p", ["0", "-0.1", "1.5"])
def test_swap_p_outside_0_1(tmp_path, calib, p):
    res = run(CNN, str(tmp_path / "o.onnx"), "--data", calib, "--keep", "0.5", "--swap-p", p)
    assert_usage_error(res, "swap probability")
    assert not (tmp_path / "o.onnx").exists()
