"""Nothing lost, nothing silent: OUT.plan.json is saved as soon as the search ends, `--plan`
recompiles it to the same model without searching, and progress reaches a non-terminal
stderr as plain lines (bars on a terminal, nothing with -q)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from click.testing import CliRunner

import scmopt.api
import scmopt.compiler.cost_guard
from models import load_split, model_path
from scmopt.cli import main, progress
from scmopt.plan import Plan

CNN = str(model_path("cnn_digits"))


class Killed(BaseException):
    """Stands in for SIGKILL: no `except Exception` handler sees it."""


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    data = load_split("cnn_digits", "calib")
    np.savez(path, input=data["input"][:128], y=data["y"][:128])
    return str(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, calib):
    """One uninterrupted run: OUT, its plan file, its report and what it printed."""
    d = tmp_path_factory.mktemp("ref")
    res = CliRunner().invoke(main, [CNN, str(d / "small.onnx"), "--data", calib, "--keep", "0.4",
                                    "--seed", "3", "--report", str(d / "r.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    return d, res


def no_search(monkeypatch) -> None:
    def tripwire(*args, **kwargs):
        raise AssertionError("--plan searched again")

    monkeypatch.setattr(scmopt.api, "_search", tripwire)


def test_plan_file_is_a_plan_with_the_search_settings(reference):
    d, res = reference
    assert {p.name for p in d.iterdir()} == {"small.onnx", "small.plan.json", "r.json"}
    doc = json.loads((d / "small.plan.json").read_text())
    plan = Plan.from_json(d / "small.plan.json")
    report = json.loads((d / "r.json").read_text())
    assert plan.to_dict()["units"] == report["plan"]["units"]
    assert doc["scmopt"]["settings"]["seed"] == 3 and doc["scmopt"]["settings"]["keep"] == 0.4
    assert doc["scmopt"]["search"]["trajectory"] == report["trajectory"]
    assert "plan " + str(d / "small.plan.json") in res.stdout


def test_plan_recompiles_to_the_same_model_without_searching(tmp_path, reference, calib,
                                                            monkeypatch):  # fmt: skip
    d, _ = reference
    no_search(monkeypatch)
    out = tmp_path / "again.onnx"
    res = CliRunner().invoke(main, [CNN, str(out), "--data", calib, "--plan",
                                    str(d / "small.plan.json"), "--report",
                                    str(tmp_path / "r.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == (d / "small.onnx").read_bytes()  # seed 3 came from the file
    a, b = (json.loads(p.read_text()) for p in (d / "r.json", tmp_path / "r.json"))
    assert {k for k in a if a[k] != b[k]} == {"timing_s", "output", "work"}
    # no search: no statistics, probes or held-out checks are counted, only compile/validation
    assert "statistics" in a["work"]["by_stage"] and "statistics" not in b["work"]["by_stage"]
    assert 0 < b["work"]["total"] < a["work"]["total"]
    assert "no search" in res.stderr and "warning" not in res.stderr
    assert not (tmp_path / "again.plan.json").exists()


def test_kill_during_compile_leaves_the_plan_and_plan_recompiles_it(tmp_path, reference, calib,
                                                                    monkeypatch):  # fmt: skip
    d, _ = reference
    out = tmp_path / "small.onnx"

    def killed(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(scmopt.compiler.cost_guard, "compile_plan", killed)
        with pytest.raises(Killed):
            CliRunner().invoke(main, [CNN, str(out), "--data", calib, "--keep", "0.4",
                                      "--seed", "3", "-q"])  # fmt: skip
    assert {p.name for p in tmp_path.iterdir()} == {"small.plan.json"}
    no_search(monkeypatch)
    res = CliRunner().invoke(main, [CNN, str(out), "--data", calib, "--plan",
                                    str(tmp_path / "small.plan.json"), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == (d / "small.onnx").read_bytes()


def test_plan_reapplies_align_and_q_is_silent(tmp_path, calib, monkeypatch):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    res = CliRunner().invoke(main, [CNN, str(a), "--data", calib, "--keep", "0.3", "--align",
                                    "8", "-q"])  # fmt: skip
    assert res.exit_code == 0 and res.output == "", res.output
    no_search(monkeypatch)
    res = CliRunner().invoke(main, [CNN, str(b), "--data", calib, "-q", "--plan",
                                    str(tmp_path / "a.plan.json")])  # fmt: skip
    assert res.exit_code == 0 and res.output == "", res.output
    assert a.read_bytes() == b.read_bytes()


def test_plan_refuses_search_flags_and_plans_of_other_models(tmp_path, reference, calib):
    d, _ = reference
    plan = str(d / "small.plan.json")
    res = CliRunner().invoke(main, [CNN, str(tmp_path / "o.onnx"), "--data", calib, "--plan",
                                    plan, "--keep", "0.5"])  # fmt: skip
    assert res.exit_code == 2 and "--keep shapes the search" in res.output
    other = str(model_path("resnet_digits"))
    res = CliRunner().invoke(main, [other, str(tmp_path / "o.onnx"), "--data", calib, "--plan",
                                    plan, "-q"])  # fmt: skip
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "plan" in lines[0], res.output
    assert list(tmp_path.iterdir()) == []


def test_plan_on_other_data_says_so(tmp_path, reference, calib):
    d, _ = reference
    res = CliRunner().invoke(main, [CNN, str(tmp_path / "o.onnx"), "--data", calib, "--samples",
                                    "100", "--plan", str(d / "small.plan.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "searched on another data" in res.stderr


def test_progress_lines_without_a_terminal(reference):
    """CliRunner's stderr is not a terminal: plain lines with elapsed time, round, units kept
    and measured numbers; the plan file is announced when the search ends."""
    _, res = reference
    lines = res.stderr.splitlines()
    stamped = [line for line in lines if re.match(r"scmopt: +\d+\.\d s  ", line)]
    assert any("round 1/4" in line for line in stamped), res.stderr
    assert any(re.search(r"round \d: \d+ units kept, risk \d\.\d{4}, fidelity", line)
               for line in stamped), res.stderr  # fmt: skip
    assert any("search done: plan saved to" in line for line in stamped)
    assert "\r" not in res.stderr  # no bar redraws in a log


def test_heartbeat_lines_while_a_stage_is_silent(tmp_path, calib, monkeypatch):
    """A stage that reports nothing (here a slow compile) still gets a line per heartbeat."""
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.05)
    real = scmopt.compiler.cost_guard.compile_plan

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(scmopt.compiler.cost_guard, "compile_plan", slow)
    res = CliRunner().invoke(main, [CNN, str(tmp_path / "o.onnx"), "--data", calib, "--keep",
                                    "0.5"])  # fmt: skip
    assert res.exit_code == 0, res.output
    beats = [line for line in res.stderr.splitlines() if "compile and validate, 80 units" in line]
    assert len(beats) >= 3, res.stderr  # the stage and the plan's numbers, repeated


def test_progress_modes(capsys, monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.02)
    p = progress.Progress(quiet=False, lines=True)
    p("round", 1, 4)
    p.record({"round": 1, "kept": 7, "risk": 0.5, "fidelity": 0.9, "accepted": True})
    time.sleep(0.15)
    p.close()
    err = capsys.readouterr().err
    assert "round 1/4" in err and "round 1: 7 units kept, risk 0.5000" in err
    assert err.count("round 1/4, 7 units kept") >= 2  # heartbeats repeat the state
    time.sleep(0.05)
    assert capsys.readouterr().err == ""  # closed: no more lines
    for quiet, lines in ((True, True), (True, False), (False, False)):
        p = progress.Progress(quiet=quiet, lines=lines)
        p("stats", 1, 3)
        p("stats", 3, 3)
        p("measure", 1, 2)
        p.record({"round": 1, "kept": 7, "accepted": False})
        p.close()
    err = capsys.readouterr().err
    assert ("stats" in err and "measure" in err) and "units kept" not in err  # bars only
