"""Section 2: non-uniform curvature. A function-preserving rescaling of one layer fools
variance pruning but not the curvature-aware criteria.

    python tools/bench_curvature.py
    python tools/bench_curvature.py --models cnn_digits --scales 100 --ratios 0.3

Variant: the first linear layer's weights and bias are multiplied by s and the next linear
layer's weights by 1/s, directly on the ONNX initializers. Everything in between (ReLU, MaxPool)
is positively homogeneous, so for s > 0 the variant computes the same function (checked on the
test split). Its first cut's activations scale by s (variance by s^2), while their effect on the
output does not change. We compress the original and the variants with each criterion and
compare quality on the test split, and where each criterion removed units (kept units per cut).
Writes benchmarks/curvature.{json,csv} and benchmarks/curvature.png.
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
    "variance+fold": ("variance", True),
    "magnitude": ("magnitude", False),
}
HOMOGENEOUS = {"Relu", "MaxPool", "Identity", "Dropout"}  # f(s x) = s f(x) for s > 0


def rescale(model, s: float):
    """(variant, producer, consumer): first linear layer x s (weights and bias), the next x 1/s."""
    import copy

    import numpy as np
    from onnx import numpy_helper

    m = copy.deepcopy(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    first = next(n for n in g.node if n.op_type in ("Conv", "Gemm"))
    t, node = first.output[0], None
    while True:  # walk through positively homogeneous single-reader ops to the next layer
        nxt = readers.get(t, [])
        if len(nxt) != 1:
            raise ValueError(f"{t} has {len(nxt)} readers")
        node = nxt[0]
        if node.op_type in ("Conv", "Gemm"):
            break
        if node.op_type not in HOMOGENEOUS and node.op_type != "Flatten":
            raise ValueError(f"{node.op_type} between the layers is not positively homogeneous")
        t = node.output[0]

    def scale(name: str, f: float) -> None:
        arr = numpy_helper.to_array(inits[name]).astype(np.float32) * np.float32(f)
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))

    scale(first.input[1], s)
    if len(first.input) > 2 and first.input[2]:
        scale(first.input[2], s)
    scale(node.input[1], 1.0 / s)
    return m, first.name, node.name


def kept_per_cut(res) -> dict[str, int]:
    removed = res.plan.removed
    return {t: sum(u not in removed for u in c.units) for t, c in res.unit_graph.cuts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["cnn_digits", "mlp_digits"])
    ap.add_argument("--scales", nargs="*", type=float, default=[100.0, 0.01])
    ap.add_argument("--ratios", nargs="*", type=float, default=[0.5, 0.3])
    ap.add_argument("--methods", nargs="*", default=list(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="curvature")
    args = ap.parse_args()
    import numpy as np

    rows = []
    for name in args.models:
        original = B.load_model(name)
        test, y = B.split(name, "test")
        calib, ycal = B.split(name, "calib")
        data = {**calib, "y": ycal}
        f0 = B.run(original, test)
        variants = [(1.0, original, None)]
        for s in args.scales:
            v, prod, cons = rescale(original, s)
            err = float(np.abs(B.run(v, test) - f0).max() / np.abs(f0).max())
            B.log(f"{name}: x{s:g} on {prod}, x{1 / s:g} on {cons}: max rel. logit diff {err:.2e}")
            assert err < 1e-4, err
            variants.append((s, v, {"producer": prod, "consumer": cons, "max_rel_diff": err}))
        from scmopt import units

        for s, model, info in variants:
            ug = units.analyze(model)
            for keep in args.ratios:
                for label in args.methods:
                    crit, fold = CONFIGS[label]
                    row = {"model": name, "scale": s, "method": label, "keep": keep,
                           "variant": info}  # fmt: skip
                    try:
                        res, secs, kept = B.run_scmopt(
                            model, dict(data), keep=keep, criterion=crit, fold=fold, seed=args.seed
                        )
                    except Exception as exc:
                        row["error"] = f"{type(exc).__name__}: {exc}"
                        B.log(name, s, label, keep, "ERROR", row["error"])
                        rows.append(row)
                        continue
                    ev = B.judge(res.unit_graph, res.model, test, y, kept, seed=args.seed)
                    row.update(units_total=ev["units"], test_agreement=ev["agreement"],
                               test_iia=ev["iia"], test_risk=ev["risk"],
                               test_accuracy=ev["accuracy"], seconds=secs,
                               kept_per_cut=kept_per_cut(res),
                               cuts_total={t: c.channels for t, c in ug.cuts.items()})  # fmt: skip
                    B.log(f"{name:11s} s={s:<6g} keep {keep:.2f} {label:15s} agree "
                          f"{ev['agreement']:.3f} iia {B.fmt(ev['iia'])} kept/cut "
                          f"{list(row['kept_per_cut'].values())}")  # fmt: skip
                    rows.append(row)
            B.write_results(args.name, rows, vars(args))
    plot(rows, args)


def plot(rows, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = args.models
    fig, axes = plt.subplots(len(models), len(args.ratios), figsize=(5 * len(args.ratios),
                             3.6 * len(models)), squeeze=False)  # fmt: skip
    scales = [1.0, *args.scales]
    for i, name in enumerate(models):
        for j, keep in enumerate(args.ratios):
            ax = axes[i][j]
            width = 0.8 / len(scales)
            for k, s in enumerate(scales):
                vals = []
                for label in args.methods:
                    r = next((r for r in rows if r["model"] == name and r["scale"] == s
                              and r["method"] == label and r["keep"] == keep), None)  # fmt: skip
                    vals.append(r.get("test_agreement", 0.0) if r else 0.0)
                ax.bar([x + k * width for x in range(len(args.methods))], vals, width,
                       label=f"s = {s:g}")  # fmt: skip
            ax.set_xticks([x + width * (len(scales) - 1) / 2 for x in range(len(args.methods))])
            ax.set_xticklabels(args.methods, rotation=30, fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{name}, keep {keep}", fontsize=9)
            ax.set_ylabel("fidelity (test)")
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(B.OUT / f"{args.name}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
