"""Real pretrained models (issue 13 item 4): scmopt and onnxsim 0.8.1's pruning side by side.

    python tools/build_real.py                                  # once: models/real/ (2 min)
    python tools/bench_real.py                                  # every model but CRAFT, both rules
    python tools/bench_real.py --models mtcnn_rnet mtcnn_onet --rules keep=0.5 min-fidelity=0.97
    python tools/bench_real.py --models efficientnet_lite1 --rules keep=0.5
    python tools/bench_real.py --models mtcnn_pnet --rules min-fidelity=0.97+per-flop flops=0.7

Models are those of models/real/manifest.json (tools/build_real.py). CRAFT (73 GFLOPs per
sample at its build size; the size is a build-time option, `build_real.py --craft-size`) runs
only when named: `--models craft`.

Per model and rule (`--rules keep=0.5 min-fidelity=0.97`):
1. scmopt: `python -m scmopt.cli IN OUT --data <name>_calib.npz --keep 0.5 | --min-fidelity 0.97
   --metric M [--output NAME] --device cpu --report R.json` in a child process (its wall time and
   its own peak RSS, `ru_maxrss` from os.wait4; FPE total and by stage from the report). The
   output analysed and its metric come from the manifest: the output whose metric is a
   classifier's (top1, token-top1: MTCNN R/O-Net's [B, 2] face probabilities) if there is one,
   else the first (`--output MODEL=NAME` overrides, with `--metric MODEL=SPEC`). A run over
   `--timeout` minutes (25) is stopped (SIGINT, then SIGKILL) and reported out of time with its
   last progress lines; a crash is recorded with its error lines verbatim.
2. onnxsim 0.8.1's structured pruning (`onnxsim.pruning.apply_structured_pruning`, L2 filter
   norms, and `apply_structured_wanda_pruning`, ||W|| x ||X|| on the first `--wanda-samples`
   calibration samples; local (per chain) and global sparsity) with its sparsity bisected
   (tools/peers/bisect.first_crossing) to the FLOPs of scmopt's compiled model.
3. Every candidate judged on the TEST split (models/real/<name>_test.npz) by the same code,
   scmopt.evaluation.validate.evaluate_artifact, with the same metric bound to the output's
   per-sample shape: fidelity (mean agreement with the original; 5th percentile for graded
   metrics), FLOPs and parameters (scmopt.ops.cost, one sample) against the original, and
   onnxruntime CPU latency (1 thread, batch 1, median of at least `--latency-runs` (30) runs,
   more for small models, in 10 rounds interleaved with the original's in the same process:
   tools/benchlib.latency_ms). Plain inputs only (no
   interchange interventions: no IIA on the test split).

Results merge into benchmarks/real.{json,csv} (a model and rule run again replaces its rows)
and the tables of this run are printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402

REAL = B.ROOT / "models" / "real"
WORK = B.CACHE / "real"
HEAVY = ("craft",)  # only when named
CLASSIFIER_METRICS = ("top1", "token-top1")
STAGES = ("setup", "statistics", "curvature probes", "selection", "held-out checks", "compile",
          "validation")  # fmt: skip
PEERS = ("l2", "l2-global", "wanda", "wanda-global")


# models ----------------------------------------------------------------------------------------
def manifest() -> list[dict]:
    path = REAL / "manifest.json"
    if not path.is_file():
        sys.exit(f"{path} missing: run `python tools/build_real.py` first")
    return json.loads(path.read_text())


def analysed_output(entry: dict, override: str | None) -> dict:
    """The output scmopt analyses: a classifier's output when the model has one, else the
    first; `override` names another."""
    outs = entry["outputs"]
    if override is not None:
        return next(o for o in outs if o["name"] == override)
    return next((o for o in outs if o["metric"] in CLASSIFIER_METRICS), outs[0])


def select_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """Output `name` first (the analysis and the evaluation read the first output), as
    scmopt.cli.compress._select_output does for `--output`."""
    outs = sorted(model.graph.output, key=lambda o: o.name != name)
    del model.graph.output[:]
    model.graph.output.extend(outs)
    return model


def load_split(name: str, which: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    with np.load(REAL / f"{name}_{which}.npz") as d:
        arrays = {k: d[k] for k in d.files}
    y = arrays.pop("y", None)
    return arrays, y


def parse_rule(text: str) -> tuple[str, float, bool]:
    """keep=R, min-fidelity=F or flops=F, with `+per-flop` for scmopt's --per-flop."""
    body, plus, extra = text.partition("+")
    name, _, value = body.partition("=")
    if name not in ("keep", "min-fidelity", "flops") or not value or extra not in ("", "per-flop"):
        raise argparse.ArgumentTypeError(
            f"rule {text!r}: keep=R, min-fidelity=F or flops=F, optionally +per-flop"
        )
    return name, float(value), bool(plus)


def rule_text(rule: tuple[str, float, bool]) -> str:
    return f"{rule[0]}={rule[1]:g}" + ("+per-flop" if rule[2] else "")


def per_model(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k] = v
    return out


# scmopt in a child process ---------------------------------------------------------------------
def progress_tail(stderr: str, n: int = 4) -> list[str]:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-n:]


def run_scmopt(entry: dict, rule: tuple[str, float], output: str, metric: str,
               samples: int | None, timeout_s: float) -> dict:  # fmt: skip
    """One `scmopt` compress in a child process: status, wall time, peak RSS, report."""
    name = entry["name"]
    tag = f"{name}_{rule[0]}{rule[1]:g}{'_per_flop' if rule[2] else ''}"
    WORK.mkdir(parents=True, exist_ok=True)
    out, rep, log = WORK / f"{tag}.onnx", WORK / f"{tag}.report.json", WORK / f"{tag}.stderr"
    for p in (out, rep):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "scmopt.cli", str(REAL / entry["file"]), str(out),
           "--data", str(REAL / entry["calib"]), f"--{rule[0]}", f"{rule[1]:g}",
           "--metric", metric, "--output", output, "--device", "cpu",
           "--report", str(rep)]  # fmt: skip
    if rule[2]:
        cmd.append("--per-flop")
    if samples is not None:
        cmd += ["--samples", str(samples)]
    shown = "scmopt " + " ".join(str(c) for c in cmd[3:])
    shown = shown.replace(str(REAL) + "/", "models/real/").replace(str(WORK) + "/", "")
    B.log(f"{name} {rule_text(rule)}: {shown}")
    started, load0 = time.strftime("%Y-%m-%dT%H:%M:%S"), os.getloadavg()
    info = B.machine()  # the commit the child runs (the tree may change while it runs)
    commit = f"{info.get('git_commit', '?')}{'+dirty' if info.get('git_dirty') else ''}"
    t0 = time.perf_counter()
    with open(log, "w") as err:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=B.ROOT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        status, usage, timed_out, last_note = None, None, False, t0
        while status is None:
            pid, st, ru = os.wait4(child.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
                break
            now = time.perf_counter()
            if now - t0 > timeout_s and not timed_out:
                timed_out = True
                B.log(f"{name} {rule_text(rule)}: over {timeout_s / 60:.0f} min, stopping it")
                child.send_signal(signal.SIGINT)
                deadline = now + 30
                while time.perf_counter() < deadline:
                    pid, st, ru = os.wait4(child.pid, os.WNOHANG)
                    if pid:
                        status, usage = st, ru
                        break
                    time.sleep(0.5)
                if status is None:
                    child.kill()
                    _, status, usage = os.wait4(child.pid, 0)
                break
            if now - last_note >= 60:
                last_note = now
                tail = progress_tail(log.read_text(errors="replace"), 1)
                B.log(f"  {tail[0] if tail else '(no progress line yet)'}")
            time.sleep(0.5)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    stderr = log.read_text(errors="replace")
    row = {
        "model": name, "rule": rule_text(rule), "method": "scmopt", "metric": metric,
        "started": started, "loadavg_at_start": load0, "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "commit": commit,
        "output": output, "command": shown, "exit_code": child.returncode,
        "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
    }  # fmt: skip
    if timed_out:
        row["status"] = "out of time"
        row["error"] = f"stopped after {wall / 60:.1f} min; last progress lines: " + " | ".join(
            progress_tail(stderr)
        )
    elif child.returncode < 0:  # not stopped by this tool
        row["status"] = f"killed by {signal.Signals(-child.returncode).name}"
        row["error"] = f"{row['status']} after {wall:.0f} s; last progress lines: " + " | ".join(
            progress_tail(stderr)
        )
    elif child.returncode not in (0, 4) or not out.is_file():
        row["status"] = "crashed"
        row["error"] = "\n".join(progress_tail(stderr, 6))
    else:
        row["status"] = "ok" if child.returncode == 0 else "target missed on validation (exit 4)"
    if rep.is_file():
        report = json.loads(rep.read_text())
        work = report["work"]
        row.update({
            "fpe": work["total"], "fpe_by_stage": work["by_stage"], "samples": work["samples"],
            **{f"fpe {s}": work["by_stage"].get(s, 0.0) for s in STAGES},
            "fidelity_val": report["fidelity"], "units": report["units"]["total"],
            "units_kept": report["units"]["kept"], "notes": report.get("notes", []),
            "timing_s": report["timing_s"],
        })  # fmt: skip
    row["path"] = str(out) if out.is_file() else None
    B.log(f"{name} {rule_text(rule)}: {row['status']}, {wall:.1f} s, "
          f"{row['peak_rss_mb']:.0f} MB peak, {row.get('fpe', float('nan')):.1f} FPE")  # fmt: skip
    return row


# onnxsim at scmopt's FLOPs ---------------------------------------------------------------------
def onnxsim_at_flops(original: onnx.ModelProto, target: int, method: str, sample: dict,
                     calib: list[dict[str, np.ndarray]], iters: int = 14) -> dict:  # fmt: skip
    """onnxsim's pruning with its sparsity bisected to `target` FLOPs (one sample): the
    closest count reached, ties to the larger model."""
    from peers import onnxsim_peer as O
    from peers.bisect import first_crossing

    from scmopt.ops import cost

    kind, glob = method.split("-")[0], method.endswith("-global")
    cache: dict[float, tuple[int, onnx.ModelProto]] = {}

    def at(s: float) -> int:
        if s not in cache:
            m = O.prune(original, s, kind, glob, calib)
            cache[s] = (cost.count_flops(m, sample), m)
        return cache[s][0]

    t0 = time.perf_counter()

    def close(lo: float, hi: float) -> bool:
        return abs(at(hi) - target) <= 0.002 * target or hi - lo < 1e-4

    first_crossing(at, target, [round(0.05 * i, 2) for i in range(20)] + [0.99], iters, close)
    best = min(cache, key=lambda s: (abs(cache[s][0] - target), -cache[s][0], s))
    return {"model": cache[best][1], "sparsity": best, "evaluations": len(cache),
            "prune_s": time.perf_counter() - t0}  # fmt: skip


def latency_runs(original: onnx.ModelProto, sample: dict, floor: int, seconds: float = 3.0) -> int:
    """Runs per model: at least `floor`, more for small models (about `seconds` of runs of
    the original each, at most 2000): their sub-millisecond medians are noisy."""
    sess = B.session(original, threads=1)
    for _ in range(3):
        sess.run(None, sample)
    t0 = time.perf_counter()
    for _ in range(5):
        sess.run(None, sample)
    per = (time.perf_counter() - t0) / 5
    return int(max(floor, min(2000, seconds / max(per, 1e-6))) // 10 * 10)


# judging on the test split ---------------------------------------------------------------------
def judge(ug, candidate: onnx.ModelProto, output: str, metric, feeds, labels) -> dict:
    """Fidelity on plain test inputs under `metric` (scmopt's evaluate_artifact), FLOPs and
    parameters of one sample."""
    from scmopt.evaluation.validate import evaluate_artifact
    from scmopt.io import graph

    cand = graph.canonicalize(select_output(graph.load(candidate), output))
    m = evaluate_artifact(ug, cand, None, feeds, labels, interventions=False, metric=metric)
    return {"fidelity_test": m.fidelity, "fidelity_test_p5": m.fidelity_p5, "n_test": m.n,
            "accuracy_test": m.accuracy, "risk_plain_test": m.risk_plain,
            **size(candidate, feeds)}  # fmt: skip


def size(model: onnx.ModelProto, feeds: dict) -> dict:
    """FLOPs (one sample) and parameters of the file as written: the canonical form folds
    compact encodings (a compiled model's border maps) into full tensors."""
    from scmopt.ops import cost

    sample = {k: v[:1] for k, v in feeds.items()}
    return {"flops": cost.count_flops(model, sample), "params": cost.count_params(model)}


def bench_model(entry: dict, rules: list[tuple[str, float]], args) -> list[dict]:
    from scmopt.evaluation import agreements
    from scmopt.io import graph
    from scmopt.units.analysis import analyze

    name = entry["name"]
    out = analysed_output(entry, per_model(args.output).get(name))
    spec = per_model(args.metric).get(name, out["metric"])
    original = graph.load(REAL / entry["file"])
    ug = analyze(select_output(graph.load(original), out["name"]))
    test, y = load_split(name, "test")
    calib, _ = load_split(name, "calib")
    if args.samples:
        calib = {k: v[: args.samples] for k, v in calib.items()}
    shape = tuple(B.run(ug.model, {k: v[:1] for k, v in test.items()}).shape[1:])
    metric = agreements.parse(spec).bind(shape)
    sample = {k: v[:1] for k, v in test.items()}
    base = size(original, test)
    B.log(f"{name}: output {out['name']} {shape}, metric {metric.spec}, "
          f"{base['flops'] / 1e6:.1f} MFLOPs, {base['params']:,} params")  # fmt: skip
    wanda_calib = [{k: v[: args.wanda_samples] for k, v in calib.items()}]
    rows, models = [], {"original": original}
    for rule in rules:
        row = run_scmopt(entry, rule, out["name"], metric.spec, args.samples, args.timeout * 60)
        rows.append(row)
        if row["path"] is None:
            continue
        scm = onnx.load(row["path"])
        row.update(judge(ug, scm, out["name"], metric, test, y))
        models[f"{row['rule']} scmopt"] = scm
        for method in args.peers if row["flops"] < base["flops"] else []:
            label = f"onnxsim {method}"
            prow = {"model": name, "rule": row["rule"], "method": label, "metric": metric.spec,
                    "output": out["name"], "flops_target": row["flops"]}  # fmt: skip
            try:
                data = wanda_calib if method.startswith("wanda") else []
                found = onnxsim_at_flops(original, row["flops"], method, sample, data)
                prow.update({k: v for k, v in found.items() if k != "model"})
                prow.update(judge(ug, found["model"], out["name"], metric, test, y))
                models[f"{row['rule']} {label}"] = found["model"]
                removed = prow["flops"] < base["flops"] or prow["params"] < base["params"]
                prow["status"] = "ok" if removed else "removed nothing at any sparsity"
            except Exception as exc:  # noqa: BLE001 - a peer's failure is a result
                prow.update(status="crashed", error=f"{type(exc).__name__}: {exc}")
            B.log(f"{name} {row['rule']} {label}: {prow['status']}, "
                  f"FLOPs {prow.get('flops', 0) / max(row['flops'], 1):.3f} of scmopt's, "
                  f"fidelity {B.fmt(prow.get('fidelity_test'))}")  # fmt: skip
            rows.append(prow)
    for r in rows:
        if "flops" in r:
            r["flops_ratio"] = r["flops"] / base["flops"]
            r["params_ratio"] = r["params"] / base["params"]
    if len(models) > 1:
        B.log(f"{name}: latency of {len(models)} models, batch 1, 1 thread")
        runs = latency_runs(original, sample, args.latency_runs)
        lat = B.latency_ms(models, sample, batch=1, runs=runs, rounds=10, threads=1)
        for r in rows:
            key = f"{r['rule']} {r['method']}"
            if key in lat:
                r["latency_ms"] = lat[key]["median_ms"]
                r["latency_runs"] = lat[key]["runs"]
                r["latency_original_ms"] = lat["original"]["median_ms"]
                r["latency_ratio"] = lat[key]["median_ms"] / lat["original"]["median_ms"]
    for r in rows:
        r.update({"flops_original": base["flops"], "params_original": base["params"]})
    return rows


# results ---------------------------------------------------------------------------------------
def merged(rows: list[dict]) -> list[dict]:
    """Earlier rows of benchmarks/real.json; a (model, rule) run again replaces all of its."""
    path = B.OUT / "real.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    new = {(r["model"], r["rule"]) for r in rows}
    return [r for r in old if (r["model"], r["rule"]) not in new] + rows


def tables(rows: list[dict]) -> str:
    rows = sorted(rows, key=lambda r: (r["model"], r["rule"] != "keep=0.5"))
    scm = [r for r in rows if r["method"] == "scmopt"]
    for r in scm:
        r["fpe_stages"] = ", ".join(f"{s} {r[f'fpe {s}']:.1f}" for s in STAGES
                                    if r.get(f"fpe {s}"))  # fmt: skip
        r["wall_min"] = r["wall_s"] / 60
        r["metric_output"] = f"{r['metric']} ({r['output']})"
    cols = [("model", "model"), ("rule", "rule"), ("metric_output", "metric (output)"),
            ("status", "status"), ("flops_ratio", "FLOPs"), ("params_ratio", "params"),
            ("fidelity_val", "fidelity val"), ("fidelity_test", "fidelity test"),
            ("fidelity_test_p5", "test p5"), ("latency_ratio", "latency"),
            ("wall_min", "wall min"), ("peak_rss_mb", "peak RSS MB"), ("fpe", "FPE"),
            ("fpe_stages", "FPE by stage")]  # fmt: skip
    peers = [r for r in rows if r["method"] != "scmopt"]
    pcols = [("model", "model"), ("rule", "rule"), ("method", "method"), ("status", "status"),
             ("sparsity", "sparsity"), ("flops_ratio", "FLOPs"), ("params_ratio", "params"),
             ("fidelity_test", "fidelity test"), ("latency_ratio", "latency"),
             ("prune_s", "s")]  # fmt: skip
    side = []
    for r in scm:
        row = {"model": r["model"], "rule": r["rule"], "metric": r["metric"],
               "scmopt": _at(r)}  # fmt: skip
        for p in peers:
            if (p["model"], p["rule"]) == (r["model"], r["rule"]):
                row[p["method"]] = _at(p) if p["status"] == "ok" else p["status"]
        side.append(row)
    scols = [("model", "model"), ("rule", "rule"), ("metric", "metric"),
             ("scmopt", "scmopt")] + [(f"onnxsim {m}", f"onnxsim {m}") for m in PEERS]  # fmt: skip
    return "\n\n".join(B.md_table(t, c, nd=3) for t, c in
                       ((scm, cols), (peers, pcols), (side, scols)))  # fmt: skip


def _at(r: dict) -> str | None:
    """'fidelity at FLOPs ratio' of a row, on the test split."""
    if r.get("fidelity_test") is None:
        return r.get("status")
    return f"{r['fidelity_test']:.3f} at {r['flops_ratio']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="default: every built model but craft")
    ap.add_argument("--rules", nargs="*", type=parse_rule,
                    default=[("keep", 0.5, False), ("min-fidelity", 0.97, False)])  # fmt: skip
    ap.add_argument("--samples", type=int, help="calibration samples used (default: all, 256)")
    ap.add_argument("--output", nargs="*", default=[], metavar="MODEL=NAME",
                    help="analyse this output of MODEL")  # fmt: skip
    ap.add_argument("--metric", nargs="*", default=[], metavar="MODEL=SPEC",
                    help="metric for MODEL (default: the manifest's for the output)")  # fmt: skip
    ap.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    ap.add_argument("--wanda-samples", type=int, default=64)
    ap.add_argument("--latency-runs", type=int, default=30, help="at least N runs per model")
    ap.add_argument("--timeout", type=float, default=25.0, help="minutes per compress")
    ap.add_argument("--tables", action="store_true",
                    help="only print the tables of benchmarks/real.json")  # fmt: skip
    args = ap.parse_args()
    if args.tables:
        print(tables(json.loads((B.OUT / "real.json").read_text())["rows"]))
        return
    entries = {e["name"]: e for e in manifest()}
    names = args.models or [n for n in entries if n not in HEAVY]
    unknown = [n for n in names if n not in entries]
    if unknown:
        sys.exit(f"not in models/real/manifest.json: {', '.join(unknown)}")
    rows: list[dict] = []
    for n in names:
        rows += bench_model(entries[n], args.rules, args)
        B.write_results("real", merged(rows), {"machine_line": B.machine_line()})
    print(tables(rows))


if __name__ == "__main__":
    main()
