"""What holds scmopt behind Kwon on vit_digits at 0.50 FLOPs: the selection or the fits?

    python tools/bench_kwon_set.py            # ~3 min on 2 cores

Kwon's removed set (Fisher of the label loss / FLOPs, tools/peers/transformer_peers.kwon) is
compiled with its own replacements (zeros; least-squares rescaling) and with scmopt's refit of
every removed unit toward the original's values under the plan's interventional statistics
(constants only; folds; folds refitted twice). Beside them scmopt's own `--flops 0.5` plans:
as given, with the search reading centred logits or softmax probabilities instead of logits,
and with other swap probabilities and fold-parent counts. Every row: top-1 agreement with the
original on the test split, FLOPs ratio. Prints a markdown table (BENCHMARKS §18).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import helper  # noqa: E402
from peers import transformer_peers as TP  # noqa: E402

import scmopt  # noqa: E402
from scmopt import units  # noqa: E402
from scmopt.analysis.config import SearchConfig  # noqa: E402
from scmopt.analysis.search import _Search  # noqa: E402
from scmopt.compiler.compile import compile_plan  # noqa: E402
from scmopt.ops import cost  # noqa: E402
from scmopt.plan import Plan  # noqa: E402

NAME, FLOPS = "vit_digits", 0.5


def with_head(model: onnx.ModelProto, kind: str) -> onnx.ModelProto:
    """`model` whose first output is replaced by centred logits or softmax probabilities."""
    g = copy.deepcopy(model)
    old = g.graph.output[0].name
    raw = old + "__raw"
    for n in g.graph.node:
        n.output[:] = [raw if o == old else o for o in n.output]
        n.input[:] = [raw if i == old else i for i in n.input]
    if kind == "centred":
        g.graph.node.extend([
            helper.make_node("ReduceMean", [raw], [raw + "_mean"], axes=[-1], keepdims=1),
            helper.make_node("Sub", [raw, raw + "_mean"], [old]),
        ])  # fmt: skip
    else:
        g.graph.node.append(helper.make_node("Softmax", [raw], [old], axis=-1))
    return g


def main() -> None:
    original = B.load_model(NAME)
    ug = units.analyze(original)
    calib, ycal = B.split(NAME, "calib")
    test, _ = B.split(NAME, "test")
    sample = {k: v[:1] for k, v in test.items()}
    tu = TP.TUnits.build(ug, sample)
    ref = TP.logits(ug.model, test).argmax(1)
    f0 = cost.count_flops(ug.model, sample)
    rows = []

    def add(label: str, model: onnx.ModelProto) -> None:
        agree = float(np.mean(TP.logits(model, test).argmax(1) == ref))
        rows.append((label, agree, cost.count_flops(model, sample) / f0))
        B.log(f"{label}: {agree:.3f} at {rows[-1][2]:.3f}")

    acts = TP.capture(tu, calib)
    tokw = TP.token_weights(calib, len(ycal), max(ug.cuts[tu.cuts[0]].spatial[0], 1))
    fisher = TP.kwon_fisher(tu, {k: v[:256] for k, v in calib.items()}, ycal[:256],
                            {c: a[:256] for c, a in acts.items()})  # fmt: skip
    removed = []
    for resc in (False, True):
        removed, m, _ = TP.kwon(tu, fisher, acts, tokw, FLOPS * f0, rescale=resc)
        add(f"Kwon's removed set ({len(removed)} units), its "
            + ("LS rescaling" if resc else "zeros"), m)  # fmt: skip
    s = _Search(ug, calib, None, SearchConfig(keep=0.5, device="cpu"), None)
    plan = Plan()
    for _, u in removed:
        plan.set_constant(u, {t: 0.0 for t in ug.units[u].cuts})
    s.plan = plan
    s.analyse_stats(1)
    add("Kwon's removed set, scmopt's refit (constants only)",
        compile_plan(ug, s.refit_removed(fold=False)).model)  # fmt: skip
    s.plan = s.refit_removed()
    add("Kwon's removed set, scmopt's refit (folds)", compile_plan(ug, s.plan).model)
    s.analyse_stats(2)
    add("Kwon's removed set, scmopt's refit (folds), refitted twice",
        compile_plan(ug, s.refit_removed()).model)  # fmt: skip
    for label, model, opts in [
        ("scmopt --flops 0.5, logits as the output", original, {}),
        ("scmopt --flops 0.5, the search reading centred logits",
         with_head(original, "centred"), {}),
        ("scmopt --flops 0.5, the search reading softmax probabilities",
         with_head(original, "softmax"), {}),
        ("scmopt --flops 0.5, swap p 0.02", original, {"swap_p": 0.02}),
        ("scmopt --flops 0.5, fold parents 12", original, {"fold_parents": 12}),
        ("scmopt --flops 0.5, fold parents 3", original, {"fold_parents": 3}),
        ("scmopt --flops 0.5, swap p 0.1, fold parents 12", original,
         {"swap_p": 0.1, "fold_parents": 12}),
    ]:  # fmt: skip
        res = scmopt.compress(model, calib, flops=FLOPS, device="cpu", metric="top1", **opts)
        add(label, compile_plan(ug, res.plan).model)
    print("| plan | test agreement | FLOPs |\n|---|---|---|")
    for label, a, f in rows:
        print(f"| {label} | {a:.3f} | {f:.3f} |")


if __name__ == "__main__":
    main()
