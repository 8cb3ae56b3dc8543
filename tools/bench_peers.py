"""Section 5: peers at the same unit count, no retraining, same calibration inputs, same
evaluation (tools/benchlib.judge on the *_test.npz split).

    python tools/bench_peers.py
    python tools/bench_peers.py --models cnn_digits --ratios 0.3 --peers onnxsim tp

For every zoo model and keep ratio, the target is the unit count scmopt reaches at that ratio
(frozen units + round(keep x prunable), counted by scmopt.units.analyze). In the same run:
- scmopt curvature+fold (the method) and scmopt variance (no fold, the classic baseline);
- onnxsim structured pruning on the same ONNX file: L2 filter magnitude
  (apply_structured_pruning) and Wanda (apply_structured_wanda_pruning, calibration split),
  per-layer and global sparsity, each as is, + ridge refit (apply_pruning_finetune) and
  + bias correction (correct_bias), sparsity bisected to the target count;
- Torch-Pruning one-shot (MetaPruner, DepGraph) on the zoo's torch modules (retrained
  deterministically, verified against the ONNX), importances magnitude / BN scale / Taylor /
  Hessian, local and global, ratio bisected to the target count, exported with the zoo exporter.
A peer that cannot reach the target count is reported at the closest count it reaches
(`reached` = no). Writes benchmarks/peers.{json,csv} and benchmarks/peers_<model>.png.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402
from peers import channel_map  # noqa: E402

RATIOS = [0.7, 0.6, 0.5, 0.3, 0.2, 0.1]


def _row(name, keep, target, method, family, model, kept, test, y, secs, **extra) -> dict:
    row = {"model": name, "keep": keep, "target_units": target, "method": method,
           "family": family, "seconds": secs, **extra}  # fmt: skip
    return row


def evaluate_into(row: dict, ug, model, kept, test, y, seed) -> dict:
    ev = B.judge(ug, model, test, y, kept, seed=seed)
    row.update(
        units_total=ev["units"], reached=ev["units"] == row["target_units"],
        params=ev["params"], flops=ev["flops"], test_agreement=ev["agreement"],
        test_iia=ev["iia"], test_risk=ev["risk"], test_risk_plain=ev["risk_plain"],
        test_accuracy=ev["accuracy"], cuts_not_mapped=ev["cuts_not_mapped"],
    )  # fmt: skip
    B.log(f"{row['model']:14s} keep {row['keep']:.2f} {row['method']:34s} units "
          f"{ev['units']:4d}/{row['target_units']:<4d} agree {ev['agreement']:.3f} "
          f"iia {B.fmt(ev['iia'])} acc {ev['accuracy']:.3f} ({row['seconds']:.1f}s)")  # fmt: skip
    return row


def scmopt_rows(name, keep, target, ug, test, y, seed):
    out = []
    for method, crit, fold in (("scmopt curvature+fold", "curvature", True),
                               ("scmopt variance", "variance", False)):  # fmt: skip
        row = _row(name, keep, target, method, "scmopt", None, None, test, y, 0.0)
        try:
            res, secs, kept = B.run_scmopt(
                str(B.model_path(name)), str(B.calib_path(name)), keep=keep, criterion=crit,
                fold=fold, seed=seed,
            )  # fmt: skip
            row["seconds"] = secs
            out.append(evaluate_into(row, res.unit_graph, res.model, kept, test, y, seed))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            B.log(name, keep, method, "ERROR", row["error"])
            out.append(row)
    return out


def onnxsim_rows(name, keep, target, ug, test, y, calib, seed):
    from peers import onnxsim_peer as O

    batches = [{"input": calib["input"][i : i + 256]} for i in range(0, len(calib["input"]), 256)]
    original = B.load_model(name)
    out = []
    for method in O.METHODS:
        for glob in (False, True):
            t0 = time.perf_counter()
            try:
                pr = O.to_units(original, target, method, glob, batches)
            except Exception as exc:
                row = _row(
                    name,
                    keep,
                    target,
                    f"onnxsim {method} {'global' if glob else 'local'}",
                    "onnxsim",
                    None,
                    None,
                    test,
                    y,
                    time.perf_counter() - t0,
                )
                row["error"] = f"{type(exc).__name__}: {exc}"
                out.append(row)
                continue
            t_prune = time.perf_counter() - t0
            kept = channel_map.kept_positions_by_bias(ug, pr.model)
            for comp in O.COMPENSATIONS:
                label = f"onnxsim {method} {'global' if glob else 'local'}" + (
                    f" +{comp}" if comp else ""
                )
                t1 = time.perf_counter()
                row = _row(name, keep, target, label, "onnxsim", None, None, test, y, 0.0,
                           sparsity=pr.sparsity, evaluations=pr.evaluations,
                           prune_seconds_total=t_prune)  # fmt: skip
                try:
                    m = O.compensate(original, pr.model, comp, batches)
                    row["seconds"] = t_prune + time.perf_counter() - t1
                    out.append(evaluate_into(row, ug, m, kept, test, y, seed))
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    B.log(name, keep, label, "ERROR", row["error"])
                    out.append(row)
    return out


def tp_rows(name, keep, target, ug, test, y, calib, ycalib, seed, grads_cache):
    from peers import torch_zoo as TZ
    from peers import tp_peer as T

    tm = TZ.trained(name)
    x = calib["input"]
    out = []
    for kind in T.IMPORTANCES:
        if kind == "bnscale" and not T.has_bn(tm):
            continue
        t0 = time.perf_counter()
        grads = None
        if kind in ("taylor", "hessian"):
            if (name, kind) not in grads_cache:
                grads_cache[(name, kind)] = T.gradients(tm, x, ycalib, kind)
            grads = grads_cache[(name, kind)]
        t_grad = time.perf_counter() - t0
        for glob in (False, True):
            label = f"torch-pruning {kind} {'global' if glob else 'local'}"
            t1 = time.perf_counter()
            row = _row(name, keep, target, label, "torch-pruning", None, None, test, y, 0.0)
            try:
                pr = T.to_units(tm, x, target, kind, glob, TZ.FINAL_LAYER[name], grads)
                row.update(seconds=t_grad + time.perf_counter() - t1, ratio=pr.ratio,
                           evaluations=pr.evaluations)  # fmt: skip
                kept = channel_map.kept_positions_by_bias(ug, pr.model)
                out.append(evaluate_into(row, ug, pr.model, kept, test, y, seed))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
                B.log(name, keep, label, "ERROR", row["error"])
                traceback.print_exc()
                out.append(row)
    return out


def plot(rows, models):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name in models:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        methods = sorted({r["method"] for r in rows if r["model"] == name and "error" not in r})
        for m in methods:
            pts = sorted((r["units_total"], r["test_agreement"], r["test_iia"] or 0.0)
                         for r in rows if r["model"] == name and r["method"] == m
                         and "error" not in r)  # fmt: skip
            main = m.startswith("scmopt curvature")
            style = "-o" if main else ("-s" if m.startswith("scmopt") else ":.")
            for ax, k in zip(axes, (1, 2), strict=True):
                ax.plot(
                    [p[0] for p in pts],
                    [p[k] for p in pts],
                    style,
                    lw=2.5 if main else 1.0,
                    label=m,
                    alpha=1.0 if main else 0.7,
                )
        for ax, what in zip(axes, ("fidelity (test)", "IIA (test)"), strict=True):
            ax.set_xlabel("units kept (scmopt count)")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.suptitle(f"{name}: scmopt vs peers (no retraining)")
        fig.tight_layout()
        fig.savefig(B.OUT / f"peers_{name}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=B.ZOO)
    ap.add_argument("--ratios", nargs="*", type=float, default=RATIOS)
    ap.add_argument("--peers", nargs="*", default=["scmopt", "onnxsim", "tp"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="peers")
    args = ap.parse_args()
    from scmopt import units

    rows: list[dict] = []
    grads_cache: dict = {}
    for name in args.models:
        ug = units.analyze(B.load_model(name))
        test, y = B.split(name, "test")
        calib, ycal = B.split(name, "calib")
        for keep in args.ratios:
            target = B.target_units(ug, keep)
            if "scmopt" in args.peers:
                rows += scmopt_rows(name, keep, target, ug, test, y, args.seed)
            if "onnxsim" in args.peers:
                rows += onnxsim_rows(name, keep, target, ug, test, y, calib, args.seed)
            if "tp" in args.peers:
                rows += tp_rows(name, keep, target, ug, test, y, calib, ycal, args.seed,
                                grads_cache)  # fmt: skip
        B.write_results(args.name, rows, {"ratios": args.ratios})
    plot(rows, args.models)


if __name__ == "__main__":
    main()
