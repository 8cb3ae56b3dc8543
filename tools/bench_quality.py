"""Section 1: quality vs sparsity. Every zoo model x criterion x keep ratio through
`scmopt.api.compress`; the compiled ONNX model is then evaluated on the held-out *_test.npz split
(never used for fitting or choosing anything) by tools/benchlib.judge.

    python tools/bench_quality.py                       # all models, criteria, ratios
    python tools/bench_quality.py --models cnn_digits --ratios 0.3

Criteria: curvature+fold (the method), curvature (no fold), and the baselines layer, variance,
magnitude, random with constant replacement (no fold, as the classic pruning criteria), plus
variance+fold and layer+fold to separate the effect of the ranking from that of folding.
Then the method (and two baselines) stopped by quality targets instead (min_iia 0.95, min_fidelity
0.99 and 0.95; `--targets-only` runs just these): how many units they remove at that quality.
Writes benchmarks/quality.{json,csv}, benchmarks/quality_targets.{json,csv} and
benchmarks/quality_<model>.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

CONFIGS = {
    "curvature+fold": ("curvature", True),
    "curvature": ("curvature", False),
    "layer": ("layer", False),
    "variance": ("variance", False),
    "magnitude": ("magnitude", False),
    "random": ("random", False),
    "layer+fold": ("layer", True),
    "variance+fold": ("variance", True),
}
RATIOS = [0.5, 0.3, 0.2, 0.1]


def run_one(name: str, label: str, keep: float | None, seed: int, ug, test, y,
            rule: tuple[str, float] | None = None) -> dict:  # fmt: skip
    crit, fold = CONFIGS[label]
    row = {"model": name, "method": label, "criterion": crit, "fold": fold, "keep": keep,
           "seed": seed, "target_units": B.target_units(ug, keep) if keep else None}  # fmt: skip
    stop = {"keep": keep} if rule is None else {rule[0]: rule[1]}
    if rule is not None:
        row["rule"] = f"{rule[0]} {rule[1]}"
    try:
        res, secs, kept = B.run_scmopt(
            str(B.model_path(name)), str(B.calib_path(name)), criterion=crit, fold=fold,
            seed=seed, **stop,
        )  # fmt: skip
    except Exception as exc:  # a ratio below the one-unit-per-cut floor, or a failure
        row["error"] = f"{type(exc).__name__}: {exc}"
        B.log(name, label, keep, "ERROR", row["error"])
        return row
    rep = res.report
    ev = B.judge(res.unit_graph, res.model, test, y, kept, seed=seed)
    row.update(
        seconds=secs,
        analysis_s=rep["timing_s"].get("analysis"),
        units_total=ev["units"],
        units_before=len(ug.units),
        constant=rep["units"]["constant"],
        folded=rep["units"]["folded"],
        params=ev["params"],
        flops=ev["flops"],
        calib_risk=rep["validation"].get("risk"),
        calib_agreement=rep.get("fidelity"),
        calib_iia=rep["validation"].get("iia"),
        test_risk=ev["risk"],
        test_risk_plain=ev["risk_plain"],
        test_agreement=ev["agreement"],
        test_iia=ev["iia"],
        test_accuracy=ev["accuracy"],
        test_accuracy_original=ev["accuracy_original"],
        iia_per_cut=ev["iia_per_cut"],
    )
    row["unit_reduction"] = 1 - ev["units"] / len(ug.units)
    B.log(f"{name:14s} {label:15s} {row.get('rule') or f'keep {keep:.2f}'} units {ev['units']:4d} "
          f"agree {ev['agreement']:.3f} iia {ev['iia']:.3f} risk {ev['risk']:.3g} "
          f"acc {ev['accuracy']:.3f} ({secs:.1f}s)")  # fmt: skip
    return row


def plot(rows: list[dict], models: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name in models:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for label in CONFIGS:
            pts = sorted((r["units_total"], r["test_agreement"], r["test_iia"])
                         for r in rows if r["model"] == name and r["method"] == label
                         and "error" not in r)  # fmt: skip
            if not pts:
                continue
            style = "-o" if label == "curvature+fold" else "--."
            lw = 2.5 if label == "curvature+fold" else 1.2
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], style, lw=lw, label=label)
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], style, lw=lw, label=label)
        for ax, what in zip(axes, ("fidelity (top-1 agreement, test)", "IIA (test)"), strict=True):
            ax.set_xlabel("units kept (scmopt count)")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{name}: quality vs units kept")
        fig.tight_layout()
        fig.savefig(B.OUT / f"quality_{name}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=B.ZOO)
    ap.add_argument("--methods", nargs="*", default=list(CONFIGS))
    ap.add_argument("--ratios", nargs="*", type=float, default=RATIOS)
    ap.add_argument(
        "--rules",
        nargs="*",
        default=["min_iia=0.95", "min_fidelity=0.99", "min_fidelity=0.95"],
        help="stopping rules run with the methods in --rule-methods",
    )
    ap.add_argument(
        "--rule-methods", nargs="*", default=["curvature+fold", "layer+fold", "variance"]
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="quality")
    ap.add_argument("--targets-only", action="store_true", help="only the stopping-rule runs")
    args = ap.parse_args()
    from scmopt import units

    rows = []
    for name in [] if args.targets_only else args.models:
        ug = units.analyze(B.load_model(name))
        test, y = B.split(name, "test")
        for keep in args.ratios:
            for label in args.methods:
                rows.append(run_one(name, label, keep, args.seed, ug, test, y))
        B.write_results(args.name, rows, {"ratios": args.ratios, "methods": args.methods})
    if rows:
        plot(rows, args.models)
    # the same methods stopped by a quality target instead of a keep ratio
    targets = []
    for name in args.models:
        ug = units.analyze(B.load_model(name))
        test, y = B.split(name, "test")
        for rule in args.rules:
            k, _, v = rule.partition("=")
            for label in args.rule_methods:
                targets.append(run_one(name, label, None, args.seed, ug, test, y, (k, float(v))))
        B.write_results(f"{args.name}_targets", targets, {"rules": args.rules})


if __name__ == "__main__":
    main()
