"""Benchmark of the analysis half (a benchmark, not a test): criteria x keep ratios, the cost of
exhaustive ablation, and peak memory against the number of calibration samples.

    python tools/bench_analysis.py            # full run (~15 min on 2 cores)
    python tools/bench_analysis.py --quick    # smaller run

Plans are searched on the model's calibration split (the search holds out 25% of it to check
itself) and every number in the tables is measured on the zoo's separate test split.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import load_split, model_path  # noqa: E402
from scmopt.analysis.measure import measure  # noqa: E402
from scmopt.analysis.search import search  # noqa: E402
from scmopt.io import graph  # noqa: E402
from scmopt.units.analysis import analyze  # noqa: E402

ROWS = [  # (label, criterion, fold)
    ("curvature+fold", "curvature", True),
    ("curvature, const", "curvature", False),
    ("layer+fold", "layer", True),
    ("variance+fold", "variance", True),
    ("variance, const", "variance", False),
    ("magnitude+fold", "magnitude", True),
    ("random+fold", "random", True),
]


def _split(name: str, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    data = load_split(name, split)
    y = data.pop("y")
    return data, y


def quality(models: list[str], rows, keeps: list[float]) -> list[str]:
    out = []
    for name in models:
        ug = analyze(graph.load(model_path(name)))
        calib, y = _split(name, "calib")
        test, y_test = _split(name, "test")
        out += [f"\n### {name} (test split, p = 0.5)\n",
                "| criterion | keep | risk | fidelity | IIA | accuracy | seconds |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, crit, fold in rows:
            for keep in keeps:
                t0 = time.perf_counter()
                res = search(ug, calib, labels=y, keep=keep, criterion=crit, fold=fold, seed=0,
                             device="cpu")  # fmt: skip
                secs = time.perf_counter() - t0
                m = measure(ug, res.plan, test, y_test, device="cpu")
                out.append(f"| {label} | {keep} | {m.risk:.4f} | {m.fidelity:.3f} | {m.iia:.3f} "
                           f"| {m.accuracy:.3f} | {secs:.1f} |")  # fmt: skip
                print(out[-1], file=sys.stderr, flush=True)
    return out


def ablation_cost(name: str, keep: float) -> list[str]:
    ug = analyze(graph.load(model_path(name)))
    calib, y = _split(name, "calib")
    rows = ["\n### Analysis time: curvature vs exhaustive ablation "
            f"({name}, keep {keep}, {len(y)} samples)\n",
            "| criterion | total s | curvature-stage s | risk (held-out) |",
            "|---|---|---|---|"]  # fmt: skip
    times = {}
    for crit in ("curvature", "ablation"):
        t0 = time.perf_counter()
        res = search(ug, calib, labels=y, keep=keep, criterion=crit, seed=0, device="cpu")
        times[crit] = (time.perf_counter() - t0, res.timing.get("curvature", 0.0))
        rows.append(f"| {crit} | {times[crit][0]:.1f} | {times[crit][1]:.1f} "
                    f"| {res.metrics['risk']:.4f} |")  # fmt: skip
        print(rows[-1], file=sys.stderr, flush=True)
    total = times["ablation"][0] / times["curvature"][0]
    stage = times["ablation"][1] / max(times["curvature"][1], 1e-9)
    rows.append(f"\nablation / curvature: total {total:.1f}x, curvature stage {stage:.1f}x")
    return rows


def _child(name: str, n: int) -> None:
    """Runs one search on n jittered calibration samples and prints time and peak RSS."""
    calib, y = _split(name, "calib")
    rng = np.random.default_rng(0)
    idx = np.arange(n) % len(y)
    data = {k: (v[idx] + (0.01 * rng.normal(size=v[idx].shape) if n > len(y) else 0)).astype(
        v.dtype) for k, v in calib.items()}  # fmt: skip
    ug = analyze(graph.load(model_path(name)))
    t0 = time.perf_counter()
    search(ug, data, labels=y[idx], keep=0.3, seed=0, device="cpu")
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "seconds": secs, "rss_mb": rss}))


def memory(name: str, sizes: list[int]) -> list[str]:
    rows = [f"\n### Peak memory vs calibration samples ({name}, keep 0.3, own process each)\n",
            "| samples | seconds | peak RSS MB |", "|---|---|---|"]  # fmt: skip
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", name, str(n)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(f"| {r['n']} | {r['seconds']:.1f} | {r['rss_mb']:.0f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


@click.command()
@click.option("--quick", is_flag=True, help="Fewer criteria, keep ratios and sizes.")
@click.option("--child", nargs=2, type=(str, int), default=None, hidden=True)
def main(quick: bool, child) -> None:
    if child:
        _child(*child)
        return
    models = ["resnet_digits", "cnn_digits"]
    keeps = [0.5, 0.3] if quick else [0.5, 0.3, 0.2, 0.1]
    rows = [r for r in ROWS if r[0] in ("curvature+fold", "variance+fold", "magnitude+fold",
                                        "random+fold")] if quick else ROWS  # fmt: skip
    t0 = time.perf_counter()
    lines = ["## scmopt analysis benchmark" + (" (quick)" if quick else "")]
    lines += quality(models, rows, keeps)
    lines += ablation_cost("cnn_digits" if quick else "resnet_digits", 0.3)
    lines += memory("resnet_digits", [512, 2048] if quick else [512, 4096])
    lines.append(f"\n(total {time.perf_counter() - t0:.0f} s)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
