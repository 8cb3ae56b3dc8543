"""Issue 14's IIA goals against brute force: the measured greedy ceiling beside scmopt and the
companion's best, on the companion's setting (last layer, half kept, p = 0.5).

For every zoo model whose studied layer has a linear readout (tools/bench_companion.py's
`layer_of`), one run prints and writes (benchmarks/iia_bound.{json,csv}):
- singleton IIA: cip-affine (the companion's best there), scmopt curvature+fold, and the
  measured greedy with least-squares fits under the interchanges (peers/measured_greedy.py);
- cell-aligned IIA: cip-affine, scmopt with one-parent folds (SearchConfig.max_coef = 1), and
  the measured greedy with one-parent plain fits; plus the greedy's calibration IIA after a
  quarter, a half and three quarters of the removals.
The greedy picks by the measured IIA of 3k calibration trials; every number in the table is on
the test split with bench_companion's protocol (10 seeds x 10k trials). vit_digits is skipped:
its studied layer has a non-linear remainder (an onnxruntime sub-model; the greedy's C^2 IIA
evaluations would take hours) and BENCHMARKS §13 measures no room there (all methods 0.996-0.998).

    python tools/bench_iia_bound.py                      # 6 models, about 6 min on 2 cores
    python tools/bench_iia_bound.py --models mlp_digits --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as B  # noqa: E402
from bench_companion import from_plan, layer_of, scmopt_plan, studied_cut  # noqa: E402
from peers import companion as C  # noqa: E402
from peers import measured_greedy as G  # noqa: E402

MODELS = ["mlp_digits", "cnn_digits", "resnet_digits", "mobile_digits", "equality_mlp",
          "text_encoder"]  # fmt: skip
GOAL = {"singleton margin": 0.05, "cell-aligned": 0.95}  # issue 14 (a), (b)


def run(name: str, args) -> dict:
    from scmopt.io.graph import load
    from scmopt.units.analysis import analyze

    ug = analyze(load(str(B.model_path(name))))
    cut = studied_cut(ug)
    layer, how = layer_of(ug, cut, name)
    if not isinstance(layer.out_test, C.Linear):
        raise SystemExit(f"{name}: the studied layer's remainder is not a linear readout ({how})")
    keep = int(round(args.keep * layer.channels))
    calib, _ = B.split(name, "calib")
    g, h, _ = C.curvature(layer)

    def iia(ab: C.Abstraction, cells: bool) -> float:
        return C.iia(layer, ab, args.seeds, args.trials, args.p, cells=cells)[0]

    row = {"model": name, "cut": cut, "units": layer.channels, "kept": keep}
    aff = C.cip_affine(layer, keep, g, h)
    row["cip_affine"], row["cip_affine_cell"] = iia(aff, False), iia(aff, True)
    for label, opts, cells in (("scmopt", {}, False), ("scmopt_one_parent", {"max_coef": 1}, True)):
        plan = scmopt_plan(ug, cut, calib, args.keep, 0, p=args.p, **opts)
        row[label] = iia(from_plan(ug, cut, plan, label), cells)
    for label, cells in (("greedy", False), ("greedy_cell", True)):
        t0 = time.perf_counter()
        ab, trace = G.greedy(layer, keep, cells, trials=args.greedy_trials, p=args.p)
        row[label] = iia(ab, cells)
        row[f"{label}_fidelity"] = C.fidelity(layer, ab)
        row[f"{label}_seconds"] = time.perf_counter() - t0
        n = len(trace)
        row[f"{label}_calib_trace"] = {k: trace[k - 1] for k in (n // 4, n // 2, 3 * n // 4, n)}
    row["margin"] = row["scmopt"] - row["cip_affine"]
    row["greedy_margin"] = row["greedy"] - row["cip_affine"]
    B.log(
        f"{name}: singleton cip-affine {row['cip_affine']:.3f}  scmopt {row['scmopt']:.3f}  "
        f"greedy {row['greedy']:.3f};  cell cip-affine {row['cip_affine_cell']:.3f}  "
        f"scmopt one parent {row['scmopt_one_parent']:.3f}  greedy {row['greedy_cell']:.3f}"
    )
    return row


def markdown(rows: list[dict]) -> str:
    head = ("| model | units, kept | singleton: cip-affine / scmopt / measured greedy | "
            "greedy margin (goal +0.05) | cell-aligned: cip-affine / scmopt one parent / "
            "measured greedy (goal 0.95) | greedy cell IIA on calib at 1/4, 1/2, 3/4, all "
            "removals |\n|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for r in rows:
        tr = " / ".join(f"{v:.3f}" for v in r["greedy_cell_calib_trace"].values())
        lines.append(
            f"| {r['model']} | {r['units']}, {r['kept']} | {r['cip_affine']:.3f} / "
            f"{r['scmopt']:.3f} / {r['greedy']:.3f} | {r['greedy_margin']:+.3f} | "
            f"{r['cip_affine_cell']:.3f} / {r['scmopt_one_parent']:.3f} / "
            f"{r['greedy_cell']:.3f} | {tr} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--greedy-trials", type=int, default=3000)
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--name", default="iia_bound")
    args = ap.parse_args()
    rows = [run(name, args) for name in args.models]
    meta = {k: getattr(args, k) for k in ("seeds", "trials", "greedy_trials", "p", "keep")}
    meta["command"] = " ".join(["python tools/bench_iia_bound.py", *sys.argv[1:]])
    B.write_results(args.name, rows, meta)
    print(markdown(rows))


if __name__ == "__main__":
    main()
