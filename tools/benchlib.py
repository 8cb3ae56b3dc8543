"""Shared helpers of the benchmark scripts (tools/bench_*.py): zoo access, machine description,
artifact-level evaluation that treats every method the same way, latency, result files.

Every method (scmopt, onnxsim, Torch-Pruning, ...) is judged on its *output ONNX model* by the
same code: units are counted by `scmopt.units.analyze(model).units` (channels of cuts, frozen
ones included), fidelity / accuracy / normalised risk on plain test inputs, and interchange
interventions (DESIGN §2: base and source from the same batch, one cut, each kept unit swapped
with probability p) applied to the original and to the candidate through hooks on the
candidate's own cut tensors, with old channel indices mapped to the candidate's channels.
The random draws depend only on (seed, cut, batch), so every candidate sees the same
interventions (common random numbers).
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
from scmopt.runtime.hooks import HookSpec, hook  # noqa: E402
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


# channel maps --------------------------------------------------------------------------------
def _producer_biases(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """node name -> bias per output channel, for Conv / Gemm with a constant bias."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits:
            out[n.name] = inits[n.input[2]].astype(np.float64).ravel()
    return out


def kept_positions_by_bias(ug: UnitGraph, candidate: onnx.ModelProto) -> dict[str, np.ndarray]:
    """For each cut of `ug` that `candidate` still has (same tensor name): the original channel
    index of each of the candidate's channels. Channels are matched through the producers
    (Conv / Gemm nodes of the same name in both models) by their bias values: removing channels
    by slicing keeps a surviving channel's bias bit-identical (verified to be unique). Use on a
    model whose producers were only sliced, not refitted."""
    cand_ug = units.analyze(candidate)
    ob, cb = _producer_biases(ug.model), _producer_biases(cand_ug.model)
    outs = {n.name: n.output[0] for n in ug.model.graph.node}
    cand_outs = {n.name: n.output[0] for n in cand_ug.model.graph.node}
    to_orig: dict[str, str] = {}  # candidate unit id -> original unit id
    for node, b in ob.items():
        if node not in cb or outs.get(node) not in ug.layouts:
            continue
        lay = list(ug.layouts[outs[node]].labels)
        clay = cand_ug.layouts.get(cand_outs.get(node, ""))
        clay = None if clay is None else list(clay.labels)
        if clay is None:
            continue
        for j, v in enumerate(cb[node]):
            hit = np.flatnonzero(np.abs(b - v) <= 1e-6 * max(1.0, abs(v)))
            if len(hit) != 1:
                raise ValueError(f"cannot map channel {j} of {node}: {len(hit)} bias matches")
            prev = to_orig.setdefault(clay[j], lay[int(hit[0])])
            if prev != lay[int(hit[0])]:
                raise ValueError(
                    f"inconsistent channel map for {clay[j]} ({prev} vs {lay[hit[0]]})"
                )
    result: dict[str, np.ndarray] = {}
    for t, cut in ug.cuts.items():
        ccut = cand_ug.cuts.get(t)
        if ccut is None:
            continue
        index = {u: i for i, u in enumerate(cut.units)}
        pos = []
        for u in ccut.units:
            orig = to_orig.get(u, u)  # units without biased producers: same id, never pruned
            if orig not in index:
                raise ValueError(f"unit {orig} not in cut {t} of the original")
            pos.append(index[orig])
        pos_a = np.asarray(pos, dtype=np.int64)
        if len(set(pos)) != len(pos) or np.any(np.diff(pos_a) <= 0):
            raise ValueError(f"cut {t}: channel map is not an ordered subset ({pos[:8]}...)")
        result[t] = pos_a
    return result


# evaluation ----------------------------------------------------------------------------------
def sites(ug: UnitGraph) -> list[str]:
    """Cuts holding prunable units, in topological order."""
    order = {out: i for i, n in enumerate(ug.model.graph.node) for out in n.output}
    found = [t for t, c in ug.cuts.items() if any(ug.units[u].prunable for u in c.units)]
    return sorted(found, key=lambda t: order.get(t, -1))


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


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def evaluate(
    ug: UnitGraph,
    candidate: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
    kept_positions: dict[str, np.ndarray] | None = None,
    *,
    p: float = 0.5,
    seed: int = 0,
    batch: int = 256,
    interventions: bool = True,
) -> dict:
    """All quality numbers of `candidate` against the original `ug.model` on `feeds`.

    agreement: top-1 agreement on plain inputs ("fidelity"); accuracy (labels); risk_plain:
    E||f - f~||^2 / E||f - Ef||^2 on plain inputs; iia: mean over cuts of the interchange
    intervention accuracy; risk: the normalised interventional risk, the mean of the plain risk
    and the per-cut interchange risks (uniform over the null and the one-cut interventions).
    `kept_positions` (cut -> original index of each candidate channel) is needed for the
    interventions; without it (or when a cut is missing from the candidate) those are None.
    """
    cand = graph.canonicalize(candidate)
    f_o = _flat(run(ug.model, feeds))
    f_c = _flat(run(cand, feeds))
    var = float(np.mean(np.sum((f_o - f_o.mean(0)) ** 2, 1))) or 1e-30
    res: dict = {
        "agreement": float(np.mean(f_o.argmax(1) == f_c.argmax(1))),
        "risk_plain": float(np.mean(np.sum((f_o - f_c) ** 2, 1)) / var),
        "n": int(len(f_o)),
    }
    if labels is not None:
        res["accuracy"] = float(np.mean(f_c.argmax(1) == labels))
        res["accuracy_original"] = float(np.mean(f_o.argmax(1) == labels))
    res.update(count_units(candidate))
    res.update(size(candidate))
    if not interventions:
        return res
    cuts = sites(ug)
    usable = [t for t in cuts if kept_positions is not None and t in kept_positions]
    res["iia_per_cut"], res["risk_per_cut"] = {}, {}
    if usable:
        specs = {t: HookSpec(patch=True) for t in usable}
        s_o = session(hook(ug, specs).model, threads=2)
        chans = {t: len(kept_positions[t]) for t in usable}
        s_c = session(hook(ug, specs, model=cand, channels=chans).model, threads=2)
        n = len(f_o)
        for ci, t in enumerate(cuts):
            if t not in usable:
                continue
            c = ug.cuts[t].channels
            kept = np.zeros(c, bool)
            kept[kept_positions[t]] = True
            rng = np.random.default_rng([seed, ci])
            hits, sq = 0, 0.0
            for s in range(0, n, batch):
                x = {k: v[s : s + batch] for k, v in feeds.items()}
                b = len(next(iter(x.values())))
                src = ((np.arange(b) + rng.integers(1, max(b, 2), size=b)) % b).astype(np.int64)
                draw = rng.random((b, c)) < p
                fo_in, fc_in = dict(x), dict(x)
                for o in usable:
                    co = ug.cuts[o].channels
                    m = np.zeros((b, co, 1), np.float32)
                    if o == t:
                        m[:, :, 0] = draw & kept
                    fo_in[f"{o}::mask"], fo_in[f"{o}::src"] = m, src
                    fc_in[f"{o}::mask"] = np.ascontiguousarray(m[:, kept_positions[o]])
                    fc_in[f"{o}::src"] = src
                a = _flat(s_o.run(None, fo_in)[0])
                bb = _flat(s_c.run(None, fc_in)[0])
                hits += int(np.sum(a.argmax(1) == bb.argmax(1)))
                sq += float(np.sum((a - bb) ** 2))
            res["iia_per_cut"][t] = hits / n
            res["risk_per_cut"][t] = sq / n / var
    missing = [t for t in cuts if t not in usable]
    res["cuts_not_mapped"] = missing
    if res["iia_per_cut"] and not missing:
        res["iia"] = float(np.mean(list(res["iia_per_cut"].values())))
        res["risk"] = float(np.mean([res["risk_plain"], *res["risk_per_cut"].values()]))
    else:
        res["iia"] = None
        res["risk"] = None
    return res


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
    """(Result, wall seconds, kept positions per cut) of scmopt.api.compress(model, data, ...)."""
    import scmopt
    from scmopt.compiler.compile import compile_plan

    t0 = time.perf_counter()
    res = scmopt.compress(model, data, **kwargs)
    secs = time.perf_counter() - t0
    kept = compile_plan(res.unit_graph, res.plan).kept_positions
    return res, secs, kept


def target_units(ug: UnitGraph, keep: float) -> int:
    """Total units (frozen included) left when `keep` of the prunable units are kept; the same
    rounding as scmopt's keep mode."""
    pr = len(ug.prunable)
    return len(ug.units) - pr + int(round(keep * pr))
