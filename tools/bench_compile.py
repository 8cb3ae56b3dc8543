"""Compile time of a random half plan on the light vgg19 (issue 11: under 10 s; 121 s before
the absorb pass applied only the removed rows of the plan's matrix).

    python tools/bench_compile.py [--runs 3]

Prints, in one run: the median wall time of `compile_plan` (slice + absorb + cleanup + shape
inference) on light vgg19 with a random plan removing half of the prunable units (constants
and folds); and, on fc7's weights (C = O = 4096, half removed), the absorb product W M three
ways: the sparse rows used now (scmopt.ops.mixing.mix), a dense BLAS product, and the dense
einsum the pass used before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from light import light_model  # noqa: E402
from plans import random_plan  # noqa: E402

from scmopt import units  # noqa: E402
from scmopt.compiler.compile import compile_plan  # noqa: E402
from scmopt.ops.mixing import mix  # noqa: E402


def _timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--einsum", action="store_true", help="also time the old dense einsum")
    args = ap.parse_args()
    model = light_model("vgg19")
    ug = units.analyze(model)
    plan = random_plan(ug, 0.5, seed=1, per_position_prob=0.0)
    t = _timed(lambda: compile_plan(ug, plan), args.runs)
    print(f"light vgg19: {len(plan.actions)} of {len(ug.prunable)} prunable units removed; "
          f"compile_plan median {t:.2f} s over {args.runs} runs")  # fmt: skip
    rng = np.random.default_rng(0)
    c = o = 4096
    w = rng.standard_normal((c, 1, o))
    removed = rng.choice(c, c // 2, replace=False)
    kept = np.setdiff1d(np.arange(c), removed)
    rows = {int(i): {int(k): float(rng.standard_normal()) for k in rng.choice(kept, 6)}
            for i in removed}  # fmt: skip
    m = np.eye(c)
    for i, row in rows.items():
        m[i, i] = 0.0
        for k, a in row.items():
            m[i, k] += a
    t_mix = _timed(lambda: mix(w, rows), args.runs)
    t_blas = _timed(lambda: m.T @ w[:, 0], args.runs)
    print(f"W M at C = O = {c}, half removed, 6 fold parents: sparse rows {t_mix:.3f} s, "
          f"dense BLAS {t_blas:.3f} s ({t_blas / t_mix:.0f}x)")  # fmt: skip
    if args.einsum:
        t_ein = _timed(lambda: np.einsum("ij,iso->jso", m, w), 1)
        print(f"dense einsum (the pass before): {t_ein:.1f} s ({t_ein / t_mix:.0f}x)")
    ok = np.allclose(mix(w, rows)[:, 0], m.T @ w[:, 0])
    print(f"sparse == dense: {ok}")


if __name__ == "__main__":
    main()
