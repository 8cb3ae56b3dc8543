"""Every bad input to the CLI: one line, exit 2, found before the work starts, no file left.

Each test runs `compress` with the search replaced by a tripwire (`no_work`): an error that
is only found by the search, or after it, fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import scmopt.api
from models import load_split, model_path
from scmopt.cli import checks, main
from scmopt.errors import ScmoptError
from scmopt.io.data import DataWarning, check_data

CNN = str(model_path("cnn_digits"))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    data = load_split("cnn_digits", "calib")
    return {"input": data["input"][:128], "y": data["y"][:128]}


@pytest.fixture
def no_work(monkeypatch):
    """The search must not start: every error here is found before it."""

    def tripwire(*args, **kwargs):
        raise AssertionError("the search started before the bad input was found")

    monkeypatch.setattr(scmopt.api, "_search", tripwire)


@pytest.fixture
def calib(tmp_path_factory, digits) -> str:
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    np.savez(path, **digits)
    return str(path)


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_error(res, fragment: str, folder: Path, before: set[str] | None = None) -> None:
    """Exit 2, one line naming `fragment`, no traceback, nothing new in `folder`."""
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], res.output
    assert lines[0].startswith("scmopt: error: ") and "Traceback" not in res.output
    assert {p.name for p in folder.iterdir()} == (before or set()), "a file was left behind"


def _model_with(tmp_path: Path, make_node, domain: str | None = None) -> str:
    """cnn_digits with `make_node(x, y)` spliced in after its second Relu."""
    model = onnx.load(CNN)
    relu = next(n for n in model.graph.node if n.name == "/features/features.6/Relu")
    out = relu.output[0]
    relu.output[0] = out + "_pre"
    at = list(model.graph.node).index(relu) + 1
    for k, node in enumerate(make_node(out + "_pre", out)):
        model.graph.node.insert(at + k, node)
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return str(path)


# --- outputs ---------------------------------------------------------------------------------


def test_out_folder_missing(tmp_path, calib, no_work):
    res = run(CNN, str(tmp_path / "nope" / "o.onnx"), "--data", calib, "--keep", "0.5")
    assert_error(res, "does not exist", tmp_path)


def test_out_folder_not_writable(tmp_path, calib, no_work, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checks.tempfile, "mkstemp", refuse)
    res = run(CNN, str(tmp_path / "o.onnx"), "--data", calib, "--keep", "0.5")
    assert_error(res, "cannot write", tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_folder_read_only(tmp_path, calib, no_work):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        res = run(CNN, str(ro / "o.onnx"), "--data", calib, "--keep", "0.5")
        assert_error(res, "cannot write", ro)
    finally:
        ro.chmod(0o700)


def test_report_folder_missing_writes_nothing(tmp_path, calib, no_work):
    out = tmp_path / "o.onnx"
    res = run(CNN, str(out), "--data", calib, "--keep", "0.5", "--report",
              str(tmp_path / "nope" / "r.html"))  # fmt: skip
    assert_error(res, "--report", tmp_path)


def test_report_failure_leaves_no_model_but_the_plan(tmp_path, calib, monkeypatch):
    """OUT and the report are written together or not at all; the plan survives."""
    from scmopt.report import html

    def broken(*args, **kwargs):
        raise RuntimeError("report writer crashed")

    monkeypatch.setattr(html, "write_json", broken)
    res = CliRunner().invoke(main, [CNN, str(tmp_path / "o.onnx"), "--data", calib,
                                    "--keep", "0.5", "--report", str(tmp_path / "r.json"),
                                    "-q"])  # fmt: skip
    assert res.exit_code == 1 and "--plan" in res.output, res.output
    assert {p.name for p in tmp_path.iterdir()} == {"o.plan.json"}


# --- data ------------------------------------------------------------------------------------


def test_one_hot_labels(tmp_path, digits, no_work):
    path = tmp_path / "d.npz"
    np.savez(path, input=digits["input"], y=np.eye(10)[digits["y"]])
    t0 = time.perf_counter()
    res = run(CNN, str(tmp_path / "o.onnx"), "--data", str(path), "--keep", "0.5")
    assert_error(res, "one-hot", tmp_path, {"d.npz"})
    assert "argmax" in res.output and time.perf_counter() - t0 < 10


def test_object_array_npz(tmp_path, digits, no_work):
    arr = np.empty(len(digits["input"]), dtype=object)
    arr[:] = list(digits["input"])
    path = tmp_path / "d.npz"
    np.savez(path, input=arr)
    res = run(CNN, str(tmp_path / "o.onnx"), "--data", str(path), "--keep", "0.5")
    assert_error(res, "Python objects", tmp_path, {"d.npz"})


def test_too_few_samples_for_the_held_out_check(tmp_path, calib, no_work):
    res = run(CNN, str(tmp_path / "o.onnx"), "--data", calib, "--samples", "8", "--keep", "0.5")
    assert_error(res, "held-out", tmp_path)
    assert "--samples 8" in res.output and "48 or more" in res.output


def test_held_out_floor_and_resolution_warning():
    with pytest.raises(ScmoptError, match="at least 10"):
        checks.held_out(47, None, None)
    assert checks.held_out(48, None, None) == []
    note = checks.held_out(128, None, 0.99)
    assert note and "n=26" in note[0] and "--min-fidelity 0.99" in note[0]
    assert checks.held_out(498, None, 0.99) == [] and checks.held_out(128, None, 0.9) == []


def test_int_inputs_are_cast_with_a_warning(tmp_path, digits):
    feeds = {"input": (digits["input"] * 255).astype(np.int32)}
    specs = {"input": ([None, 1, 8, 8], np.dtype(np.float32))}
    with pytest.warns(DataWarning, match="int32 data cast"):
        assert check_data(feeds, None, specs)["input"].dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # float64 -> float32 is no surprise
        check_data({"input": digits["input"].astype(np.float64)}, None, specs)
    path = tmp_path / "d.npz"
    np.savez(path, **feeds, y=digits["y"])
    res = CliRunner().invoke(main, [CNN, str(tmp_path / "o.onnx"), "--data", str(path),
                                    "--keep", "0.5"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "scmopt: warning: input 'input': int32 data cast" in res.stderr


# --- models ----------------------------------------------------------------------------------


def test_custom_op_onnxruntime_cannot_run(tmp_path, calib, no_work):
    path = _model_with(tmp_path, lambda x, y: [helper.make_node("FancyOp", [x], [y],
                       domain="com.example", name="fancy")], "com.example")  # fmt: skip
    res = run(path, str(tmp_path / "o.onnx"), "--data", calib, "--keep", "0.5")
    assert_error(res, "op FancyOp of domain 'com.example'", tmp_path, {"model.onnx"})


def test_op_without_a_cpu_kernel(tmp_path, calib, no_work):
    def nodes(x, y):
        return [helper.make_node("Cast", [x], ["b16"], to=TensorProto.BFLOAT16),
                helper.make_node("Abs", ["b16"], ["a16"], name="abs16"),
                helper.make_node("Cast", ["a16"], [y], to=TensorProto.FLOAT)]  # fmt: skip

    res = run(_model_with(tmp_path, nodes), str(tmp_path / "o.onnx"), "--data", calib,
              "--keep", "0.5")  # fmt: skip
    assert_error(res, "no CPU kernel for op Abs (domain ai.onnx", tmp_path, {"model.onnx"})
    assert "'abs16'" in res.output


def test_missing_external_data(tmp_path, calib, no_work):
    src = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(CNN), str(src), save_as_external_data=True, location="w.bin",
                    size_threshold=0)  # fmt: skip
    (tmp_path / "w.bin").unlink()
    res = run(str(src), str(tmp_path / "o.onnx"), "--data", calib, "--keep", "0.5")
    assert_error(res, "external data file 'w.bin'", tmp_path, {"ext.onnx"})
    assert_error(run("inspect", str(src)), "'w.bin'", tmp_path, {"ext.onnx"})


# --- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--keep", "1.5"], "'--keep'"),
        (["--min-fidelity", "2"], "'--min-fidelity'"),
        (["--batch-size", "0"], "'--batch-size'"),
        (["--criterion", "best"], "'--criterion'"),
        (["--bogus"], "--bogus"),
        (["--plan", "missing.json"], "--plan missing.json: no such file"),
        (["--iia-cuts", "0"], "'--iia-cuts': 0 is below 1"),
        (["--iia-cuts", "some"], "'--iia-cuts': 'some' is neither a whole number nor 'all'"),
    ],
    ids=[
        "keep-range",
        "fidelity-range",
        "batch",
        "criterion",
        "unknown",
        "plan",
        "iia-cuts",
        "iia-cuts-word",
    ],
)
def test_messages_name_the_cli_flag(tmp_path, calib, no_work, args, fragment):
    assert_error(run(CNN, str(tmp_path / "o.onnx"), "--data", calib, *args), fragment, tmp_path)


def test_keep_below_the_floor_names_the_flag(tmp_path, calib, monkeypatch):
    """Found by the search's first check (it needs the unit graph), before any measurement."""
    from scmopt.analysis import search

    def tripwire(*args, **kwargs):
        raise AssertionError("the search measured before the bad input was found")

    monkeypatch.setattr(search, "_Search", tripwire)
    res = run(CNN, str(tmp_path / "o.onnx"), "--data", calib, "--keep", "0.001")
    assert_error(res, "--keep=0.001 leaves 0 of 160", tmp_path)


def test_keep_heads_needs_keep(tmp_path, calib, no_work):
    res = run(CNN, str(tmp_path / "o.onnx"), "--data", calib, "--keep-heads", "0.5")
    assert_error(res, "--keep-heads goes with --keep", tmp_path)


def test_keep_heads_below_the_floor_names_the_flag():
    from scmopt.cli.common import flags

    assert flags("keep_heads=0.1 leaves 1 of 8 attention heads") == (
        "--keep-heads=0.1 leaves 1 of 8 attention heads"
    )


def test_validate_runs_must_be_positive(tmp_path, calib):
    assert_error(run("validate", CNN, CNN, "--data", calib, "--runs", "0"), "'--runs'", tmp_path)


def test_validate_takes_examples_for_both_models():
    res = CliRunner().invoke(main, ["validate", "example:cnn_digits", "example:cnn_digits",
                                    "--data", "example:cnn_digits", "--runs", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "fidelity" in res.stdout and "same file" in res.stderr


def test_inspect_into_a_closed_pipe_exits_quietly():
    """`scmopt inspect M | head`: the reader is gone before the first line is written."""
    proc = subprocess.Popen([sys.executable, "-m", "scmopt.cli", "inspect", CNN], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err
