"""Shared helpers of the benchmark scripts (tools/bench_*.py): zoo access, machine description,
the one quality row every method is judged by, latency, result files.

Every method (scmopt, onnxsim, Torch-Pruning, ...) is judged on its *output ONNX model* by the
same code, scmopt's own evaluation (scmopt.evaluation.validate.evaluate_artifact; `judge`
only adds the counts): units are counted by `scmopt.units.analyze(model).units` (channels of
cuts, frozen ones included), fidelity / accuracy / normalised risk on plain test inputs, and
interchange interventions (DESIGN §2: base and source drawn over the whole split by
scmopt.evaluation.sampler, one cut, each kept unit swapped with probability p) applied to the
original and to the candidate through hooks on the candidate's own cut tensors, with old
channel indices mapped to the candidate's channels (scmopt results: `Result.kept`; peers:
tools/peers/channel_map.py). The draws depend only on (seed, split), so every candidate sees
the same interventions (common random numbers), whatever the batch size.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "tools")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from models import get_entry, load_split, model_path  # noqa: E402
from scmopt import units  # noqa: E402
from scmopt.io import graph  # noqa: E402
from scmopt.ops import cost  # noqa: E402
from scmopt.units.analysis import UnitGraph  # noqa: E402

ZOO = ["mlp_digits", "cnn_digits", "resnet_digits", "mobile_digits", "equality_mlp"]
CNNS = ["cnn_digits", "resnet_digits", "mobile_digits"]
OUT = ROOT / "benchmarks"
CACHE = Path(os.environ.get("SCMOPT_BENCH_CACHE", Path.home() / ".cache" / "scmopt-bench"))

ort.set_default_logger_severity(3)


# machine / provenance ---------------------------------------------------------------------------
def machine() -> dict:
    """What ran the benchmark: CPU, cores, memory, library versions, commit, load."""
    info: dict = {"date": _dt.datetime.now().isoformat(timespec="seconds")}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "Hypervisor vendor", "L2 cache", "L3 cache"):
                info[k.strip()] = v.strip()
    except OSError:
        pass
    info["nproc"] = os.cpu_count()
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gb"] = round(int(mem) / 2**20, 1)
    info["loadavg_at_start"] = os.getloadavg()
    info["python"] = platform.python_version()
    info["numpy"] = np.__version__
    info["onnx"] = onnx.__version__
    info["onnxruntime"] = ort.__version__
    for mod in ("torch", "torch_pruning", "onnxsim", "onnxslim"):
        with contextlib.suppress(Exception):
            info[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        info["git_dirty"] = bool(dirty)
    return info


def machine_line(info: dict | None = None) -> str:
    info = info or machine()
    return (
        f"{info.get('Model name', '?')} ({info.get('Hypervisor vendor', 'bare metal')} VM), "
        f"{info.get('nproc')} cores, {info.get('mem_gb')} GB; Python {info['python']}, "
        f"onnxruntime {info['onnxruntime']}, torch {info.get('torch', '-')}; "
        f"commit {info.get('git_commit', '?')}{'+dirty' if info.get('git_dirty') else ''}"
    )


# zoo -----------------------------------------------------------------------------------------
def load_model(name: str) -> onnx.ModelProto:
    return graph.load(model_path(name))


def split(name: str, which: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({'input': x}, y) of a zoo model's calib or test split (dynamo variants: base data)."""
    entry = get_entry(name)
    base = entry.get("variant_of") or name
    d = load_split(base, which)
    y = d.pop("y")
    return d, y


# unit counting -------------------------------------------------------------------------------
def count_units(model: onnx.ModelProto) -> dict:
    ug = units.analyze(model)
    return {"units": len(ug.units), "prunable": len(ug.prunable)}


def size(model: onnx.ModelProto) -> dict:
    return {"params": cost.count_params(model), "flops": cost.count_flops(model)}


def session(model: onnx.ModelProto, threads: int = 1, level: str = "all") -> ort.InferenceSession:
    """CPU session; `level` is onnxruntime's graph optimisation level (all: default, includes
    the NCHWc layout transform of convolutions; extended: fusions without layout changes)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[level]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(model_or_sess, feeds: dict[str, np.ndarray], batch: int = 512) -> np.ndarray:
    sess = (
        model_or_sess
        if isinstance(model_or_sess, ort.InferenceSession)
        else session(model_or_sess, threads=2)
    )
    n = len(next(iter(feeds.values())))
    outs = []
    for s in range(0, n, batch):
        outs.append(sess.run(None, {k: v[s : s + batch] for k, v in feeds.items()})[0])
    return np.concatenate(outs)


def judge(
    ug: UnitGraph,
    candidate: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
    kept_positions: dict[str, np.ndarray] | None = None,
    *,
    p: float = 0.5,
    seed: int = 0,
    interventions: bool = True,
) -> dict:
    """The benchmark row of `candidate` against `ug.model` on `feeds`: scmopt's metrics
    (evaluate_artifact: agreement, accuracy, risk_plain, risk, iia, iia_per_cut, risk_per_cut,
    cuts_not_mapped) plus units, parameters and FLOPs. `kept_positions` (cut -> original
    index of each candidate channel) is needed for the interventions; where it misses a cut,
    iia and risk are None."""
    from scmopt.evaluation.validate import evaluate_artifact

    cand = graph.canonicalize(candidate)
    m = evaluate_artifact(ug, cand, kept_positions, feeds, labels, p=p, seed=seed,
                          interventions=interventions)  # fmt: skip
    row = {"agreement": m.fidelity, "risk_plain": m.risk_plain, "risk": m.risk, "iia": m.iia,
           "iia_per_cut": m.iia_per_cut, "risk_per_cut": m.risk_per_cut,
           "accuracy": m.accuracy, "accuracy_original": m.accuracy_original, "n": m.n,
           "cuts_not_mapped": m.unmapped}  # fmt: skip
    return {**row, **count_units(candidate), **size(candidate)}


# timing ------------------------------------------------------------------------------------
def latency_ms(
    models: dict[str, onnx.ModelProto],
    feeds: dict[str, np.ndarray],
    batch: int,
    runs: int = 30,
    rounds: int = 5,
    threads: int = 1,
    level: str = "all",
) -> dict[str, dict]:
    """Median onnxruntime CPU latency per model, runs interleaved across models in `rounds`
    so that load changes on a shared machine hit every model alike."""
    n = len(next(iter(feeds.values())))
    reps = -(-batch // n)  # the test split may be smaller than the batch: repeat it
    x = {k: np.ascontiguousarray(np.concatenate([v] * reps)[:batch]) for k, v in feeds.items()}
    sess = {k: session(m, threads, level) for k, m in models.items()}
    for s in sess.values():
        for _ in range(5):
            s.run(None, x)
    times: dict[str, list[float]] = {k: [] for k in models}
    per = max(1, runs // rounds)
    for _ in range(rounds):
        for k, s in sess.items():
            for _ in range(per):
                t0 = time.perf_counter()
                s.run(None, x)
                times[k].append(time.perf_counter() - t0)
    return {
        k: {"median_ms": float(np.median(v) * 1e3), "p10_ms": float(np.percentile(v, 10) * 1e3),
            "p90_ms": float(np.percentile(v, 90) * 1e3), "runs": len(v)}
        for k, v in times.items()
    }  # fmt: skip


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


# results -----------------------------------------------------------------------------------
def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def write_results(name: str, rows: list[dict], meta: dict | None = None) -> Path:
    """benchmarks/<name>.json (rows + meta + machine) and benchmarks/<name>.csv (flat rows)."""
    OUT.mkdir(exist_ok=True)
    doc = {"benchmark": name, "machine": machine(), "meta": meta or {}, "rows": rows}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1, default=_jsonable))
    flat = [{k: v for k, v in r.items() if not isinstance(v, dict | list)} for r in rows]
    keys: list[str] = []
    for r in flat:
        keys.extend(k for k in r if k not in keys)
    with open(OUT / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
    return path


def fmt(v, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{nd}f}"
    return str(v)


def md_table(rows: list[dict], cols: list[tuple[str, str]], nd: int = 3) -> str:
    """Markdown table of `rows` with (key, header) columns."""
    out = ["| " + " | ".join(h for _, h in cols) + " |",
           "|" + "|".join("---" for _ in cols) + "|"]  # fmt: skip
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(k), nd) for k, _ in cols) + " |")
    return "\n".join(out)


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# scmopt runs -------------------------------------------------------------------------------
def calib_path(name: str) -> Path:
    from models import zoo_dir

    entry = get_entry(name)
    return zoo_dir() / entry["calib"]


def run_scmopt(model, data, **kwargs) -> tuple:
    """(Result, wall seconds, kept positions per cut: Result.kept) of scmopt.compress."""
    import scmopt

    t0 = time.perf_counter()
    res = scmopt.compress(model, data, **kwargs)
    return res, time.perf_counter() - t0, res.kept


def target_units(ug: UnitGraph, keep: float) -> int:
    """Total units (frozen included) left when `keep` of the prunable units are kept; the same
    rounding as scmopt's keep mode."""
    pr = len(ug.prunable)
    return len(ug.units) - pr + int(round(keep * pr))
