"""Section 7: scaling of the analysis with calibration samples and model width.

    python tools/bench_scaling.py
    python tools/bench_scaling.py --samples 256 1024 4096 --widths 1 2 --repeats 2

Every configuration runs `scmopt.api.compress(..., keep=0.3)` (curvature+fold; a fixed keep ratio
so every run does the same number of search rounds) in a fresh subprocess, which reports its
wall times and its resident memory: the RSS before compress (after imports and data loading),
the peak RSS during compress (VmRSS sampled every 2 ms by a thread; the process high-water mark
resource.getrusage(RUSAGE_SELF).ru_maxrss is also recorded, but it is set by the onnxruntime
import, above what the analysis adds on these models), and their difference. Time is the median
of --repeats runs (a single run when it takes over 2 minutes), memory the maximum.

Samples: cnn_digits' 1024 calibration samples, cut to the first n for n < 1024; for n > 1024
the set is extended with jittered copies (Gaussian noise, sigma 0.05, clipped to [0, 1], fixed
seed). Width: cnn_digits retrained with all widths x1, x2, x4 (32k/64k conv channels, 64k
hidden; same training recipe and seed as the zoo model; x1 is retrained too so the three are
alike), exported with the zoo exporter and cached in $SCMOPT_BENCH_CACHE.
Writes benchmarks/scaling.{json,csv} and benchmarks/scaling.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

JITTER = 0.05


def wide_cnn(width: int) -> Path:
    """ONNX file of cnn_digits with every width multiplied by `width`, trained like the zoo."""
    path = B.CACHE / f"cnn_digits_x{width}.onnx"
    if path.exists():
        return path
    import torch
    import torch.nn.functional as F
    from torch import nn

    from models import datasets as ds
    from models.export import export_torchscript
    from models.train import TrainConfig, accuracy, make_deterministic, predict, train

    class WideCNN(nn.Module):
        def __init__(self, k: int) -> None:
            super().__init__()
            c1, c2, h = 32 * k, 64 * k, 64 * k
            self.features = nn.Sequential(
                nn.Conv2d(1, c1, 3, padding=1),
                nn.BatchNorm2d(c1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(c1, c2, 3, padding=1),
                nn.BatchNorm2d(c2),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.fc1 = nn.Linear(c2 * 4, h)
            self.fc2 = nn.Linear(h, 10)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(torch.flatten(self.features(x), 1))))

    data = ds.digits(image=True)
    make_deterministic(2)
    model = train(WideCNN(width), data.train, TrainConfig(epochs=30, seed=2))
    acc = accuracy(predict(model, data.test.x), data.test.y)
    onx = export_torchscript(model, torch.from_numpy(data.test.x[:2]))
    B.CACHE.mkdir(parents=True, exist_ok=True)
    B.graph.save(onx, path)
    (path.with_suffix(".json")).write_text(json.dumps({"test_accuracy": acc}))
    return path


def samples(n: int, seed: int = 0):
    import numpy as np

    calib, y = B.split("cnn_digits", "calib")
    x = calib["input"]
    if n <= len(x):
        return {"input": x[:n].copy(), "y": y[:n].copy()}
    rng = np.random.default_rng(seed)
    reps = -(-n // len(x))
    xs = [x] + [np.clip(x + rng.normal(0, JITTER, x.shape), 0, 1).astype(np.float32)
                for _ in range(reps - 1)]  # fmt: skip
    return {"input": np.concatenate(xs)[:n], "y": np.tile(y, reps)[:n]}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(cfg: dict) -> None:
    import resource
    import threading
    import time

    import scmopt

    data = samples(cfg["samples"])
    model = str(B.model_path("cnn_digits")) if cfg["width"] == 0 else str(wide_cnn(cfg["width"]))
    rss0 = _rss_mb()
    peak = [rss0]
    done = threading.Event()

    def sample() -> None:  # the high-water mark of the process is set by imports (onnxruntime)
        while not done.wait(0.002):
            peak[0] = max(peak[0], _rss_mb())

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    res = scmopt.compress(model, data, keep=cfg["keep"], seed=cfg.get("seed", 0))
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({
        "wall_s": wall, "analysis_s": res.report["timing_s"]["analysis"],
        "timing": res.report["timing_s"], "peak_rss_mb": max(peak[0], 0.0),
        "ru_maxrss_mb": maxrss, "rss_before_mb": rss0, "units": res.report["units"],
        "agreement": res.report["fidelity"],
    }))  # fmt: skip


def run_child(cfg: dict) -> dict:
    env = dict(os.environ)
    out = subprocess.run(
        ["nice", "-n", "10", sys.executable, __file__, "--child", json.dumps(cfg)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child failed: {out.stderr[-2000:]}")


def fit_linear(xs, ys) -> dict:
    import numpy as np

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    a, b = np.polyfit(x, y, 1)
    pred = a * x + b
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    return {"per_unit": float(a), "intercept": float(b), "r2": float(r2),
            "loglog_slope": float(slope)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child")
    ap.add_argument("--samples", nargs="*", type=int, default=[256, 512, 1024, 2048, 4096, 8192])
    ap.add_argument("--widths", nargs="*", type=int, default=[1, 2, 4])
    ap.add_argument("--width-samples", type=int, default=1024)
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="scaling")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    for w in args.widths:
        wide_cnn(w)
    configs = [("samples", {"samples": n, "width": 0}) for n in args.samples]
    configs += [("width", {"samples": args.width_samples, "width": w}) for w in args.widths]
    rows = []
    for sweep, cfg in configs:
        cfg = {**cfg, "keep": args.keep}
        runs = [run_child(cfg)]
        while len(runs) < args.repeats and runs[0]["wall_s"] < 120:  # long runs: once
            runs.append(run_child(cfg))
        row = {"sweep": sweep, **cfg,
               "model": "cnn_digits" if cfg["width"] == 0 else f"cnn_digits_x{cfg['width']}",
               "wall_s": statistics.median(r["wall_s"] for r in runs),
               "analysis_s": statistics.median(r["analysis_s"] for r in runs),
               "analysis_s_all": [r["analysis_s"] for r in runs],
               "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
               "ru_maxrss_mb": max(r["ru_maxrss_mb"] for r in runs),
               "rss_before_mb": max(r["rss_before_mb"] for r in runs),
               "units_total": runs[0]["units"]["total"], "agreement": runs[0]["agreement"],
               "timing": runs[0]["timing"]}  # fmt: skip
        row["rss_growth_mb"] = row["peak_rss_mb"] - row["rss_before_mb"]
        B.log(f"{sweep:7s} n={cfg['samples']:5d} width={cfg['width']} units {row['units_total']} "
              f"analysis {row['analysis_s']:.2f}s peak {row['peak_rss_mb']:.0f} MB "
              f"(+{row['rss_growth_mb']:.0f})")  # fmt: skip
        rows.append(row)
        B.write_results(args.name, rows, vars(args))
    s_rows = [r for r in rows if r["sweep"] == "samples"]
    meta = dict(vars(args))
    if len(s_rows) >= 3:
        meta["fit_time_vs_samples"] = fit_linear(
            [r["samples"] for r in s_rows], [r["analysis_s"] for r in s_rows]
        )
        meta["fit_memory_vs_samples"] = fit_linear(
            [r["samples"] for r in s_rows], [r["rss_growth_mb"] for r in s_rows]
        )
        B.log("fit", meta["fit_time_vs_samples"], meta["fit_memory_vs_samples"])
    B.write_results(args.name, rows, meta)
    plot(rows)


def plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    s = [r for r in rows if r["sweep"] == "samples"]
    w = [r for r in rows if r["sweep"] == "width"]
    ax = axes[0]
    ax.plot([r["samples"] for r in s], [r["analysis_s"] for r in s], "-o", label="analysis s")
    ax2 = ax.twinx()
    ax2.plot([r["samples"] for r in s], [r["peak_rss_mb"] for r in s], "--s", color="C1",
             label="peak RSS MB")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("calibration samples (cnn_digits)")
    ax.set_ylabel("analysis time (s)")
    ax2.set_ylabel("peak RSS (MB)")
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot([r["units_total"] for r in w], [r["analysis_s"] for r in w], "-o")
    for r in w:
        ax.annotate(f"x{r['width']}", (r["units_total"], r["analysis_s"]))
    ax.set_xlabel("units (cnn_digits widened x1, x2, x4)")
    ax.set_ylabel("analysis time (s)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(B.OUT / "scaling.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
