"""Section 6: causal alignment on equality_mlp against the known high-level model
(models/equality_task.py: v1 = (a == b), v2 = (c == d), y = (v1 == v2)).

    python tools/bench_causal.py
    python tools/bench_causal.py --ratios 0.3 --methods scmopt

Alignment (fitted on the calibration split, on the original network only): at each hidden cut,
a unit is aligned with v1 when its activation moves more when the (a, b) half of the input is
taken from another sample than when the (c, d) half is (mean squared change), else with v2;
units that never move are aligned with neither. The interventions at a cut: for test pairs
(base, source = a random other test sample), give the units aligned with V (V = {v1}, {v2} or
{v1, v2}) their value under the source, through scmopt.intervene.hook(HookSpec(patch=True)) on
the model itself (for a compressed model: on its compiled cut tensors, only the units it keeps,
channel indices mapped), and check that the predicted class equals the high-level
counterfactual `counterfactual(base, source, V)`. "IIA (informative)" counts only the pairs whose
counterfactual differs from the base label (doing nothing scores 0 there).

Models: the original; scmopt curvature+fold and scmopt variance (no fold) at each keep ratio and
scmopt at its default setting (min_fidelity 0.99); Torch-Pruning magnitude (local) and onnxsim
L2 (local) at the same unit counts. Writes benchmarks/causal.{json,csv}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402
from peers import channel_map  # noqa: E402

NAME = "equality_mlp"
SETS = {"v1": ("v1",), "v2": ("v2",), "v1+v2": ("v1", "v2")}


def half_swapped(x, src, part: str):
    """x with the (a, b) half ('ab') or the (c, d) half ('cd') taken from x[src]."""
    out = x.copy()
    sl = slice(0, 8) if part == "ab" else slice(8, 16)
    out[:, sl] = x[src][:, sl]
    return out


def capture(ug, cuts, x):
    """Activations of the original at `cuts` for inputs x: cut -> [n, C]."""
    from scmopt.runtime.hooks import HookSpec, hook

    h = hook(ug, {t: HookSpec(capture=True) for t in cuts})
    sess = B.session(h.model, threads=2)
    outs = sess.run([h.outputs[t] for t in cuts], {"input": x})
    return {t: o.reshape(len(x), -1) for t, o in zip(cuts, outs, strict=True)}


def alignment(ug, cuts, x, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    src = (np.arange(len(x)) + rng.integers(1, len(x), len(x))) % len(x)
    base = capture(ug, cuts, x)
    ab = capture(ug, cuts, half_swapped(x, src, "ab"))
    cd = capture(ug, cuts, half_swapped(x, src, "cd"))
    out = {}
    for t in cuts:
        s_ab = np.mean((ab[t] - base[t]) ** 2, 0)
        s_cd = np.mean((cd[t] - base[t]) ** 2, 0)
        lab = np.where(s_ab > s_cd, "v1", "v2").astype(object)
        lab[(s_ab + s_cd) <= 1e-12] = "none"
        out[t] = lab
    return out


def interchange(ug, model, kept, cuts, align, x, src, variables) -> dict:
    """Predicted class of every base row with the aligned units of one cut patched from src."""
    import numpy as np

    from scmopt.io import graph
    from scmopt.runtime.hooks import HookSpec, hook

    cand = graph.canonicalize(model)
    specs = {t: HookSpec(patch=True) for t in cuts}
    h = hook(ug, specs, model=cand, channels={t: len(kept[t]) for t in cuts})
    sess = B.session(h.model, threads=2)
    n = len(x)
    xx = np.concatenate([x, x[src]])
    s2 = np.concatenate([np.arange(n, 2 * n), np.arange(n)]).astype(np.int64)
    preds = {}
    for t in cuts:
        feeds = {"input": xx}
        for o in cuts:
            m = np.zeros((2 * n, len(kept[o]), 1), np.float32)
            if o == t:
                sel = np.isin(align[o][kept[o]], variables)
                m[:n, sel, 0] = 1.0
            feeds[f"{o}::mask"], feeds[f"{o}::src"] = m, s2
        preds[t] = sess.run(None, feeds)[0][:n].argmax(1)
    return preds


def causal_rows(label, ug, model, kept, cuts, align, x, src, y_cf, y_base, extra) -> list[dict]:
    import numpy as np

    rows = []
    plain = B.run(model, {"input": x}).argmax(1)
    for vname, variables in SETS.items():
        preds = interchange(ug, model, kept, cuts, align, x, src, variables)
        for t in cuts:
            inf = y_cf[vname] != y_base
            hit = preds[t] == y_cf[vname]
            rows.append({
                "method": label, "cut": t, "variables": vname,
                "aligned_units": int(np.sum(np.isin(align[t], variables))),
                "aligned_kept": int(np.sum(np.isin(align[t][kept[t]], variables))),
                "iia_high_level": float(np.mean(hit)),
                "iia_high_level_informative": float(np.mean(hit[inf])),
                "informative_pairs": int(inf.sum()),
                "accuracy": float(np.mean(plain == y_base)), **extra,
            })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", nargs="*", type=float, default=[0.5, 0.3, 0.2])
    ap.add_argument("--methods", nargs="*", default=["scmopt", "variance", "tp", "onnxsim"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="causal")
    args = ap.parse_args()
    import numpy as np

    from models.equality_task import counterfactual
    from scmopt import units
    from scmopt.evaluation.interchange import sites

    original = B.load_model(NAME)
    ug = units.analyze(original)
    cuts = sites(ug)
    calib, ycal = B.split(NAME, "calib")
    test, yte = B.split(NAME, "test")
    align = alignment(ug, cuts, calib["input"], args.seed)
    x = test["input"]
    rng = np.random.default_rng([args.seed, 6])
    src = ((np.arange(len(x)) + rng.integers(1, len(x), len(x))) % len(x)).astype(np.int64)
    y_cf = {v: counterfactual(x, x[src], vs) for v, vs in SETS.items()}
    for t in cuts:
        B.log(t, {v: int(np.sum(align[t] == v)) for v in ("v1", "v2", "none")})

    rows = []

    def add(label, model, kept, extra):
        ev = B.judge(ug, model, test, yte, kept, seed=args.seed)
        extra = {**extra, "units": ev["units"], "test_agreement": ev["agreement"],
                 "iia_vs_original": ev["iia"]}  # fmt: skip
        new = causal_rows(label, ug, model, kept, cuts, align, x, src, y_cf, yte, extra)
        for r in new:
            B.log(
                f"{label:32s} units {ev['units']:3d} {r['cut']:18s} {r['variables']:6s} "
                f"aligned {r['aligned_kept']:2d}/{r['aligned_units']:2d} IIA "
                f"{r['iia_high_level']:.3f} informative {r['iia_high_level_informative']:.3f}"
            )
        rows.extend(new)

    full = {t: np.arange(ug.cuts[t].channels) for t in cuts}
    add("original", original, full, {"keep": 1.0})
    calib_path = str(B.calib_path(NAME))
    settings = [(f"scmopt keep {k}", dict(keep=k), k) for k in args.ratios]
    settings.append(("scmopt default (min_fidelity 0.99)", dict(min_fidelity=0.99), None))
    for label, kw, keep in settings:
        if "scmopt" in args.methods:
            res, _, kept = B.run_scmopt(str(B.model_path(NAME)), calib_path, seed=args.seed, **kw)
            add(label.replace("scmopt", "scmopt curvature+fold"), res.model, kept, {"keep": keep})
        if keep is None:
            continue
        if "variance" in args.methods:
            res, _, kept = B.run_scmopt(
                str(B.model_path(NAME)),
                calib_path,
                seed=args.seed,
                criterion="variance",
                fold=False,
                keep=keep,
            )
            add(f"scmopt variance keep {keep}", res.model, kept, {"keep": keep})
        target = B.target_units(ug, keep)
        if "tp" in args.methods:
            from peers import torch_zoo as TZ
            from peers import tp_peer as T

            pr = T.to_units(TZ.trained(NAME), calib["input"], target, "magnitude", False,
                            TZ.FINAL_LAYER[NAME])  # fmt: skip
            add(
                f"torch-pruning magnitude keep {keep}",
                pr.model,
                channel_map.kept_positions_by_bias(ug, pr.model),
                {"keep": keep},
            )
        if "onnxsim" in args.methods:
            from peers import onnxsim_peer as O

            pr = O.to_units(original, target, "l2", False, [{"input": calib["input"]}])
            add(
                f"onnxsim l2 keep {keep}",
                pr.model,
                channel_map.kept_positions_by_bias(ug, pr.model),
                {"keep": keep},
            )
    B.write_results(
        args.name,
        rows,
        {
            **vars(args),
            "alignment": {
                t: {v: int(np.sum(align[t] == v)) for v in ("v1", "v2", "none")} for t in cuts
            },
        },
    )


if __name__ == "__main__":
    main()
