"""IIA when half of ONE layer is removed: the setting of the companion paper's public code
(half of an MNIST MLP's last hidden layer: IIA 0.68 with variance pruning, 0.56 with affine
folds fitted on plain data).

    python tools/bench_iia_layer.py
    python tools/bench_iia_layer.py --models mlp_digits --keep 0.5

Per model, only the units of the last cut before the output layer are candidates (every other
unit is frozen for the search); `keep` of them stay. Methods, all through scmopt.search:
- variance, constant: the companion's variance pruning (unit -> its mean);
- variance + fold fitted on plain data (swap probability ~0 while fitting): the companion's
  affine folds;
- scmopt curvature+fold: the method, constants and folds fitted under the interchange
  interventions (p = 0.5).
Each plan is compiled and evaluated on the test split by tools/benchlib.judge: IIA at that
layer (each kept unit swapped with probability 0.5 between base and source, DESIGN §2), the IIA
averaged over all cuts, and fidelity. Writes benchmarks/iia_layer.{json,csv}.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

METHODS = {
    "variance, constant": dict(criterion="variance", fold=False),
    "variance + fold fitted on plain data": dict(criterion="variance", fold=True, p=1e-6),
    "scmopt curvature+fold": dict(criterion="curvature", fold=True),
}


def last_cut(ug) -> str:
    """The cut whose consumers produce the graph output (the last hidden layer)."""
    outs = {o.name for o in ug.model.graph.output}
    nodes = {n.name: n for n in ug.model.graph.node}
    for t, c in ug.cuts.items():
        if any(set(nodes[n].output) & outs for n in c.consumers):
            return t
    return list(ug.cuts)[-1]


def layer_only(ug, cut: str):
    """A copy of `ug` in which only the units of `cut` can be removed."""
    one = copy.deepcopy(ug)
    for u in one.units.values():
        if u.frozen is None and cut not in u.cuts:
            u.frozen = "outside the studied layer"
    return one


def run(name: str, keep: float, seed: int) -> list[dict]:
    from scmopt.analysis.search import search
    from scmopt.compiler.compile import compile_plan
    from scmopt.io.graph import load
    from scmopt.units.analysis import analyze

    ug = analyze(load(str(B.model_path(name))))
    cut = last_cut(ug)
    one = layer_only(ug, cut)
    calib, _ = B.split(name, "calib")
    test, y = B.split(name, "test")
    rows = []
    for label, opts in METHODS.items():
        t0 = time.perf_counter()
        found = search(one, calib, keep=keep, seed=seed, **opts)
        secs = time.perf_counter() - t0
        comp = compile_plan(ug, found.plan)
        ev = B.judge(ug, comp.model, test, y, comp.kept_positions, seed=seed)
        row = {"model": name, "cut": cut, "layer_units": len(ug.cuts[cut].units),
               "kept": len(one.prunable) - len(found.plan.removed), "method": label,
               "iia_layer": ev["iia_per_cut"][cut], "iia_mean": ev["iia"],
               "fidelity": ev["agreement"], "accuracy": ev["accuracy"], "seconds": secs,
               "constant": found.plan.counts()["constant"],
               "folded": found.plan.counts()["folded"]}  # fmt: skip
        B.log(
            f"{name:14s} {label:38s} kept {row['kept']}/{row['layer_units']} IIA(layer) "
            f"{row['iia_layer']:.3f} IIA(mean) {row['iia_mean']:.3f} fid {row['fidelity']:.3f}"
        )
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["mlp_digits", "cnn_digits", "resnet_digits"])
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="iia_layer")
    args = ap.parse_args()
    rows = []
    for name in args.models:
        rows += run(name, args.keep, args.seed)
    B.write_results(args.name, rows, {"keep": args.keep, "seed": args.seed,
                                      "methods": list(METHODS)})  # fmt: skip


if __name__ == "__main__":
    main()
