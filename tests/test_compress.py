"""End-to-end compression: CLI and Python API, report contents, validation on the artifact."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import io_signature, outputs, padded_convnet, relative_error

import scmopt
import scmopt.api
from models import load_split, model_path
from scmopt.cli import main

CNN = str(model_path("cnn_digits"))
REPORT_KEYS = {"units", "params", "flops", "fidelity", "validation", "accuracy",
               "compile_max_abs_error", "timing_s", "groups", "plan", "trajectory"}  # fmt: skip


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    data = load_split("cnn_digits", "calib")
    np.savez(path, input=data["input"][:384], y=data["y"][:384])
    return str(path)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, calib):
    d = tmp_path_factory.mktemp("out")
    out, rep = d / "small.onnx", d / "report.json"
    res = CliRunner().invoke(
        main, [CNN, str(out), "--data", calib, "--keep", "0.4", "--report", str(rep), "-q"]
    )
    assert res.exit_code == 0, res.output
    return out, json.loads(rep.read_text())


def test_cli_writes_a_valid_smaller_model(compressed):
    out, rep = compressed
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert io_signature(model) == io_signature(onnx.load(CNN))
    assert rep["params"]["after"] < rep["params"]["before"]
    assert rep["flops"]["after"] < rep["flops"]["before"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["scmopt.plan"])["units"]
    assert json.loads(meta["scmopt.summary"])["units"]["kept"] == rep["units"]["kept"]


def test_report_has_every_section(compressed):
    _, rep = compressed
    assert REPORT_KEYS <= set(rep)
    u = rep["units"]
    assert set(u) == {"total", "prunable", "kept", "constant", "folded", "frozen"}
    assert u["kept"] + u["constant"] + u["folded"] == u["total"]
    # keep=0.4 of the prunable units
    assert u["kept"] - u["frozen"] == round(0.4 * u["prunable"])
    assert {"risk", "agreement", "iia", "samples"} <= set(rep["validation"])
    assert rep["fidelity"] == rep["validation"]["agreement"]  # the number the CLI prints
    assert 0.0 <= rep["validation"]["certificate"]["bound"] <= 1.0
    assert rep["compile_max_abs_error"] < 1e-4
    assert rep["timing_s"]["total"] > 0 and rep["trajectory"]


def test_compile_error_is_measured_on_the_artifact(compressed, calib):
    """The plan in the metadata, recompiled, reproduces the written model."""
    out, _ = compressed
    model = onnx.load(str(out))
    plan = scmopt.api.plan_from_model(model)
    again = scmopt.compile(CNN, plan)
    x = {"input": np.load(calib)["input"][:64]}
    assert relative_error(outputs(again, x), outputs(model, x)) < 1e-6


def test_summary_table_and_html_report(tmp_path, calib):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.html"
    res = CliRunner().invoke(
        main, ["compress", CNN, str(out), "--data", calib, "--min-fidelity", "0.95",
               "--report", str(rep)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for word in ("units", "parameters", "FLOPs/sample", "fidelity", "IIA", "accuracy", "time"):
        assert word in res.output
    page = rep.read_text()
    assert page.count("<svg") >= 4 and "certificate" in page.lower()
    assert "IIA (mean over cuts, p = 0.5)" in page and "(p = 0.5;" in res.output


def test_validate_command(compressed, calib):
    out, _ = compressed
    res = CliRunner().invoke(main, ["validate", CNN, str(out), "--data", calib, "--runs", "3"])
    assert res.exit_code == 0, res.output
    for word in ("fidelity", "accuracy", "parameters", "FLOPs", "latency", "IIA"):
        assert word in res.output


def test_without_data_says_statistics_are_not_meaningful(tmp_path):
    res = CliRunner().invoke(main, [CNN, str(tmp_path / "o.onnx"), "--keep", "0.5",
                                    "--samples", "64"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "random inputs" in res.output and "not meaningful" in res.output


def test_compile_mismatch_exits_3_and_writes_nothing(tmp_path, calib, monkeypatch):
    import scmopt.compiler.cost_guard as guard

    real = guard.compile_plan

    def broken(ug, plan):
        compiled = real(ug, plan)
        init = compiled.model.graph.initializer[0]
        arr = onnx.numpy_helper.to_array(init) + 1.0
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
        return compiled

    monkeypatch.setattr(guard, "compile_plan", broken)
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(main, [CNN, str(out), "--data", calib, "--keep", "0.5", "-q"])
    assert res.exit_code == 3 and "simulation" in res.output
    assert not out.exists()


def test_python_api(calib):
    data = dict(np.load(calib))
    result = scmopt.compress(CNN, data, keep=0.5, seed=1)
    assert isinstance(result, scmopt.Result)
    assert result.report["accuracy"]["samples"] > 0
    plan = scmopt.analyze(CNN, {"input": data["input"]}, keep=0.5, seed=1)
    assert isinstance(plan, scmopt.api.Plan) and plan.removed
    model = scmopt.compile(CNN, plan)
    onnx.checker.check_model(model, full_check=True)


def test_dynamic_spatial_shapes_compress_exactly(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(padded_convnet(), path)
    x = np.random.default_rng(0).normal(size=(128, 3, 9, 9)).astype(np.float32)
    result = scmopt.compress(str(path), {"x": x}, keep=0.5)
    assert result.report["compile_max_abs_error"] < 1e-4


def test_image_folder_and_npy_data(tmp_path):
    from PIL import Image

    data = load_split("cnn_digits", "calib")["input"][:64]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(data):
        Image.fromarray((img[0] * 255).astype(np.uint8), mode="L").save(folder / f"{i:03d}.png")
    npy = tmp_path / "calib.npy"
    np.save(npy, data)
    for source in (folder, npy):
        out = tmp_path / f"out_{source.suffix or 'dir'}.onnx"
        res = CliRunner().invoke(main, [CNN, str(out), "--data", str(source), "--keep", "0.5",
                                        "-q"])  # fmt: skip
        assert res.exit_code == 0, res.output
        assert out.exists()


def test_external_data_model(tmp_path, calib):
    model = onnx.load(CNN)
    src = tmp_path / "ext.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="ext.data",
                    size_threshold=0)  # fmt: skip
    out = tmp_path / "small.onnx"
    res = CliRunner().invoke(main, [str(src), str(out), "--data", calib, "--keep", "0.5", "-q"])
    assert res.exit_code == 0, res.output
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_output_option_selects_the_logits(tmp_path, calib):
    """Two outputs: --output picks the one the analysis reads; the written model keeps both,
    in their original order."""
    model = onnx.load(CNN)
    hidden = model.graph.node[-2].output[0]  # the hidden Relu before the last Gemm
    model.graph.output.insert(0, onnx.helper.make_tensor_value_info(hidden, 1, ["batch", 64]))
    src = tmp_path / "two.onnx"
    onnx.save(model, src)
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(main, [str(src), str(out), "--data", calib, "--keep", "0.5",
                                    "--output", "logits", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert [o.name for o in onnx.load(str(out)).graph.output] == [hidden, "logits"]
    bad = CliRunner().invoke(main, [str(src), str(out), "--data", calib, "--output", "nope"])
    assert bad.exit_code == 2 and "no output 'nope'" in bad.output


def test_swap_p_sets_the_interventional_distribution(calib):
    """swap_p is the p of I for fits, risk and IIA: a small p fits closer to plain inputs, so
    the plain-input risk of the compiled model drops (BENCHMARKS.md §9)."""
    data = dict(np.load(calib))
    half = scmopt.compress(CNN, data, keep=0.3, seed=0)
    low = scmopt.compress(CNN, data, keep=0.3, seed=0, swap_p=0.05)
    half_v, low_v = half.report["validation"], low.report["validation"]
    assert half.report["settings"]["swap_p"] == 0.5 and half_v["iia_p"] == 0.5
    assert low.report["settings"]["swap_p"] == 0.05 and low_v["iia_p"] == 0.05
    assert len(low.plan.removed) == len(half.plan.removed)
    assert low_v["risk_plain"] < 0.8 * half_v["risk_plain"]


def test_python_api_data_without_the_model_input():
    data = {"pixels": load_split("cnn_digits", "calib")["input"][:64]}
    with pytest.raises(scmopt.ScmoptError, match="no array for model input.*got: pixels"):
        scmopt.compress(CNN, data, keep=0.5)
