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
    """A rule still missed after the stricter searches: warning, exit 4, OUT written."""
    import scmopt.api

    calls = []

    def missed(m, *args):
        calls.append(m.fidelity)
        return f"target missed on the validation split: fidelity {m.fidelity:.4f} < 1.01"

    monkeypatch.setattr(scmopt.api, "_missed", missed)
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(main, [CNN, str(out), "--data", CNN, "--min-fidelity", "0.9", "-q"])
    assert res.exit_code == 4, res.output
    assert "warning: target missed on the validation split" in res.output
    assert len(calls) == 4 and out.exists()  # the first search and three stricter ones


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
