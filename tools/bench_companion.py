"""Section 13: the companion paper's methods (vbp, random, cip-const, cip-affine;
tools/peers/companion.py) on their own trial protocol, side by side with scmopt's plan for the
same layer, on every zoo model.

    python tools/bench_companion.py
    python tools/bench_companion.py --models mlp_digits --no-ablations --name companion_mlp
    python tools/bench_companion.py --tables     # print the tables of benchmarks/companion.json

Per model the studied layer is the last cut before the output layer (bench_iia_layer.last_cut;
where its units are frozen, as vit_digits' CLS vector after the final LayerNorm, the last cut
with prunable units; the companion's methods are then also run alone at the frozen cut), half
of its units kept. The remainder of the network after the cut is
the last Gemm's weight (a linear readout) where the cut feeds only that Gemm, otherwise an
onnxruntime sub-model of the nodes downstream of the cut, fed the base sample's values of
whatever else they read (vit_digits: the residual stream). scmopt's plan is
bench_iia_layer.layer_only + search(keep, criterion curvature, fold), read from the Plan
(removed unit = offset + fold coefficients x kept units) and scored with the SAME trials
(common random numbers: seeds 0..S-1). Both IIAs: singleton (removed units keep the base value
in the original) and cell-aligned (a kept unit's swap carries its cell). On mlp_digits the
tool checks the reproduction: cip-affine 0.579, vbp 0.547, cip-const 0.537 within 0.01.
Ablations (`--no-ablations` skips them) vary the fold parents, the fit distribution and the
curvature weighting on both sides. Writes benchmarks/<name>.{json,csv} (default
companion: give a partial run another --name); `--markdown` also prints BENCHMARKS.md section
13's tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from bench_iia_layer import last_cut, layer_only  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from peers import companion as C  # noqa: E402

MODELS = ["mlp_digits", "cnn_digits", "resnet_digits", "mobile_digits", "equality_mlp",
          "vit_digits", "text_encoder"]  # fmt: skip
PAPER = {"cip-affine": 0.579, "vbp": 0.547, "cip-const": 0.537}  # issue 14, mlp_digits
COMPANION = ("vbp", "random", "cip-const", "cip-affine")
SCMOPT = "scmopt curvature+fold"
SCMOPT_ONE = "scmopt curvature+fold, one parent (max_coef=1)"
# scmopt ablations: search options on top of criterion=curvature, fold=True
SCMOPT_ABLATIONS = {
    "scmopt curvature+fold, max_coef=8": dict(max_coef=8),
    "scmopt curvature+fold fitted on plain data (p=1e-6)": dict(p=1e-6),
    "scmopt variance+fold (no curvature)": dict(criterion="variance"),
}


# the studied layer ---------------------------------------------------------------------------
def studied_cut(ug) -> str:
    """The last cut before the output if it has prunable units, else the last cut (in node
    order of its producer) that has them."""
    cut = last_cut(ug)
    if any(ug.units[u].frozen is None for u in ug.cuts[cut].units):
        return cut
    order = {o: i for i, n in enumerate(ug.model.graph.node) for o in n.output}
    live = [t for t, c in ug.cuts.items() if any(ug.units[u].frozen is None for u in c.units)]
    return max(live, key=lambda t: order.get(t, -1))


def downstream(model: onnx.ModelProto, cut: str) -> list[onnx.NodeProto]:
    """The nodes that read the cut, directly or through each other (node order)."""
    reach, nodes = {cut}, []
    for n in model.graph.node:
        if reach & set(n.input):
            nodes.append(n)
            reach.update(n.output)
    return nodes


def linear_readout(model: onnx.ModelProto, nodes: list[onnx.NodeProto], cut: str):
    """C.Linear of a remainder that is one Gemm (transA 0) of the cut with constant B, C."""
    inits = {t.name: t for t in model.graph.initializer}
    if len(nodes) != 1 or nodes[0].op_type != "Gemm" or nodes[0].input[0] != cut:
        return None
    n = nodes[0]
    att = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if att.get("transA", 0) or any(i not in inits for i in n.input[1:]):
        return None
    w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
    w = (w if att.get("transB", 0) else w.T) * att.get("alpha", 1.0)
    b = np.zeros(w.shape[0])
    if len(n.input) > 2:
        b = b + att.get("beta", 1.0) * numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
    return C.Linear(w, b)


@dataclass
class SubModel:
    """The nodes downstream of the cut as an onnxruntime session: values [n, C, P] (the cut's
    [N, C, P] view) plus the base rows' values of the other tensors they read -> logits."""

    sess: ort.InferenceSession
    cut: str
    layout: object  # scmopt.units.layout.Layout
    shape: tuple[int, ...]  # the cut tensor's non-batch shape
    extras: dict[str, np.ndarray]  # tensor -> values per sample of the split
    batch: int = 8192

    def __call__(self, a: np.ndarray, base: np.ndarray) -> np.ndarray:
        outs = []
        for s in range(0, len(a), self.batch):
            part = a[s : s + self.batch]
            x = self.layout.from_ncp(part, (len(part), *self.shape)).astype(np.float32)
            feeds = {self.cut: np.ascontiguousarray(x)}
            feeds.update({k: v[base[s : s + self.batch]] for k, v in self.extras.items()})
            outs.append(self.sess.run(None, feeds)[0])
        return np.concatenate(outs).astype(np.float64)


def remainder_inputs(model: onnx.ModelProto, nodes, cut: str) -> list[str]:
    """What the nodes after the cut read besides the cut and constants."""
    produced = {o for n in nodes for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    return sorted({i for n in nodes for i in n.input if i and i not in produced | inits} - {cut})


def sub_model(model: onnx.ModelProto, nodes, inputs: dict[str, np.ndarray]):
    """An onnxruntime session of `nodes` with graph inputs named and typed as `inputs`."""
    inits = {t.name: t for t in model.graph.initializer}
    needed = dict.fromkeys(i for n in nodes for i in n.input if i in inits)

    def vi(name: str, arr: np.ndarray):
        elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
        return helper.make_tensor_value_info(name, elem, ["N", *arr.shape[1:]])

    graph = helper.make_graph(nodes, "remainder", [vi(k, v) for k, v in inputs.items()],
                              list(model.graph.output), [inits[i] for i in needed])  # fmt: skip
    sub = helper.make_model(graph, opset_imports=model.opset_import)
    sub.ir_version = model.ir_version
    return B.session(sub, threads=1)


def capture(model: onnx.ModelProto, names: list[str], feeds: dict) -> dict[str, np.ndarray]:
    """Values of the named tensors (graph inputs or intermediate) on `feeds`."""
    inputs = {i.name for i in model.graph.input}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inner = [n for n in names if n not in inputs]
    m.graph.output.extend([onnx.ValueInfoProto(name=n) for n in inner])
    sess = B.session(m, threads=1)
    n = len(next(iter(feeds.values())))
    parts = [sess.run(inner, {k: x[s : s + 512] for k, x in feeds.items()})
             for s in range(0, n, 512)]  # fmt: skip
    got = {t: np.concatenate([p[q] for p in parts]) for q, t in enumerate(inner)}
    return {n: feeds[n] if n in inputs else got[n] for n in names}


def layer_of(ug, cut: str, name: str) -> tuple[C.Layer, str]:
    """The studied layer's values on both splits and the network's remainder, + how."""
    model, c = ug.model, ug.cuts[cut]
    calib, yc = B.split(name, "calib")
    test, _ = B.split(name, "test")
    nodes = downstream(model, cut)
    lin = linear_readout(model, nodes, cut)
    if lin is not None:
        vals = [capture(model, [cut], d)[cut] for d in (calib, test)]
        ac, at = (c.layout.to_ncp(v).astype(np.float64) for v in vals)
        return C.Layer(ac, at, yc, lin, lin), f"linear readout: Gemm '{nodes[0].name}'"
    extras = remainder_inputs(model, nodes, cut)
    probe = capture(model, [cut, *extras], {k: v[:2] for k, v in calib.items()})
    sess = sub_model(model, nodes, probe)
    outs = []
    for d in (calib, test):
        v = capture(model, [cut, *extras], d)
        outs.append((c.layout.to_ncp(v[cut]).astype(np.float64), {e: v[e] for e in extras}))
    rest = tuple(probe[cut].shape[1:])
    rem = [SubModel(sess, cut, c.layout, rest, ex) for _, ex in outs]
    how = (f"onnxruntime sub-model of the {len(nodes)} nodes after the cut "
           f"({', '.join(n.op_type for n in nodes)}); base values of {extras}")  # fmt: skip
    return C.Layer(outs[0][0], outs[1][0], yc, rem[0], rem[1]), how


# scmopt's plan as an abstraction --------------------------------------------------------------
def from_plan(ug, cut: str, plan, name: str) -> C.Abstraction:
    """Removed unit = offset + coefficients x kept units, from Plan.cut_affine."""
    c = ug.cuts[cut]
    assert len(set(c.units)) == c.channels, "one channel per unit expected at the studied cut"
    m, b = plan.cut_affine(c)
    removed = np.array([i for i, u in enumerate(c.units) if u in plan.actions], dtype=int)
    kept = np.setdiff1d(np.arange(c.channels), removed)
    assert np.allclose(m[kept][:, kept], np.eye(len(kept))) and np.allclose(b[kept], 0)
    return C.Abstraction(name, kept, removed, m[removed][:, kept], b[removed])


def scmopt_plan(ug, cut, calib, keep, seed, **opts):
    from scmopt.analysis.search import search

    opts = {"criterion": "curvature", "fold": True, **opts}
    return search(layer_only(ug, cut), calib, keep=keep, seed=seed, **opts).plan


def compiled_fidelity(ug, plan, name: str) -> float:
    """Fidelity of the compiled plan by scmopt's evaluation (a check of from_plan)."""
    from scmopt.compiler.compile import compile_plan

    test, y = B.split(name, "test")
    return B.judge(ug, compile_plan(ug, plan).model, test, y, interventions=False)["agreement"]


# one model ------------------------------------------------------------------------------------
def measure(layer, abst, family, args, **extra) -> dict:
    t0 = time.perf_counter()
    mean, std, per = C.iia(layer, abst, args.seeds, args.trials, args.p)
    cells = abst.cells
    if (cells >= 0).any():
        cmean, cstd, cper = C.iia(layer, abst, args.seeds, args.trials, args.p, cells=True)
    else:  # constants only: no cells, both alignments coincide
        cmean, cstd, cper = mean, std, per
    nz = (abst.coef != 0).sum(axis=1)
    share = C.explained(layer, abst, seed=0, trials=args.trials, p=args.p)
    row = {"method": abst.name, "family": family, "units": layer.channels,
           "kept": len(abst.kept), "iia": mean, "iia_std": std, "iia_seeds": per,
           "iia_cell": cmean, "iia_cell_std": cstd, "iia_cell_seeds": cper,
           "fidelity": C.fidelity(layer, abst), "constant": int((nz == 0).sum()),
           "folded": int((nz > 0).sum()),
           "parents_mean": float(nz[nz > 0].mean()) if (nz > 0).any() else 0.0,
           "cells_used": int(len(set(cells[cells >= 0].tolist()))),
           "explained_plain": share and share[0], "explained_interchange": share and share[1],
           "shift_max": C.shift(layer, abst),
           "eval_seconds": time.perf_counter() - t0, **extra}  # fmt: skip
    B.log(
        f"  {abst.name:58s} IIA {mean:.3f} +- {std:.3f}  cell {cmean:.3f}  "
        f"fid {row['fidelity']:.3f}  const/fold {row['constant']}/{row['folded']}"
        + (f"  explained plain/interchange {share[0]:.2f}/{share[1]:.2f}" if share else "")
    )
    return row


def companion(ug, cut: str, name: str, args, family: str = "companion"):
    """(layer, g/h, the four methods' abstractions, their rows, info) at one cut."""
    ids = ug.cuts[cut].units
    layer, how = layer_of(ug, cut, name)
    keep = int(round(args.keep * layer.channels))
    t0 = time.perf_counter()
    g, h, curv_how = C.curvature(layer)
    info = {"cut": cut, "remainder": how, "curvature": curv_how, "keep": keep,
            "curvature_seconds": time.perf_counter() - t0}  # fmt: skip
    B.log(
        f"{name}: {cut} ({layer.channels} units, {layer.calib.shape[2]} positions), keep "
        f"{keep}; {how}; g, h: {curv_how}"
    )
    comp = {
        "vbp": C.vbp(layer, keep),
        "random": C.random(layer, keep),
        "cip-const": C.cip_const(layer, keep, g, h),
        "cip-affine": C.cip_affine(layer, keep, g, h),
    }
    rows = [measure(layer, a, family, args, model=name, cut=cut) for a in comp.values()]
    rows[-1]["cells"] = comp["cip-affine"].cell_map(ids)
    return layer, h, comp, rows, info


def margins(rows: list[dict]) -> None:
    """Each row's margin over the best companion method at its cut (singleton, cell)."""
    for cut in {r["cut"] for r in rows}:
        group = [r for r in rows if r["cut"] == cut]
        peers = [r for r in group if r["family"].startswith("companion")]
        best = max(peers, key=lambda r: r["iia"])
        best_cell = max(peers, key=lambda r: r["iia_cell"])
        for r in group:
            r.update(margin=r["iia"] - best["iia"], best_companion=best["method"],
                     margin_cell=r["iia_cell"] - best_cell["iia_cell"],
                     best_companion_cell=best_cell["method"])  # fmt: skip


def run(name: str, args) -> tuple[list[dict], dict]:
    """Rows of one model: the companion's methods and scmopt's plans at the studied cut (and
    the companion's alone at the last cut when scmopt freezes it)."""
    from scmopt.io.graph import load
    from scmopt.units.analysis import analyze

    ug = analyze(load(str(B.model_path(name))))
    cut = studied_cut(ug)
    layer, h, comp, rows, info = companion(ug, cut, name, args)
    calib, _ = B.split(name, "calib")
    plans = {SCMOPT: {}, SCMOPT_ONE: dict(max_coef=1)}
    if args.ablations:
        plans.update(SCMOPT_ABLATIONS)
    scm = {}
    for label, opts in plans.items():
        t0 = time.perf_counter()
        plan = scmopt_plan(ug, cut, calib, args.keep, args.seed, **opts)
        secs = time.perf_counter() - t0
        scm[label] = from_plan(ug, cut, plan, label)
        fam = "scmopt" if label in (SCMOPT, SCMOPT_ONE) else "ablation"
        rows.append(measure(layer, scm[label], fam, args, search_seconds=secs,
                            fidelity_compiled=compiled_fidelity(ug, plan, name),
                            max_parents=max(len(a.at[cut].coef) for a in plan.actions.values()),
                            cells=scm[label].cell_map(ug.cuts[cut].units), model=name,
                            cut=cut))  # fmt: skip
    if args.ablations:
        for a in companion_ablations(layer, comp, scm[SCMOPT], h, info["keep"]):
            rows.append(measure(layer, a, "ablation", args, model=name, cut=cut))
    last = last_cut(ug)
    if last != cut:  # frozen for scmopt: the companion's methods alone
        reason = ug.units[ug.cuts[last].units[0]].frozen
        info["last_cut"] = {"cut": last, "frozen_for_scmopt": reason}
        more = companion(ug, last, name, args, family="companion (scmopt: frozen)")
        rows += more[3]
        info["last_cut"].update(more[4])
    margins(rows)
    return rows, info


def companion_ablations(layer, comp, scm, h, keep) -> list[C.Abstraction]:
    """Fits and sets varied one at a time (numpy; the companion's selection rules)."""
    aff, calib = comp["cip-affine"], layer.calib
    n = 20_000 // calib.shape[2]  # samples x positions ~ 20k rows per fit
    x_int, i = C.interchange_sample(calib, aff.kept, n, seed=12345)
    h_int = h[i]
    out = [
        C.affine("cip-affine, uniform weights (no curvature)", aff, calib, np.ones_like(h)),
        C.affine("cip-affine, 1 parent", aff, calib, h, parents=1),
        C.affine(f"cip-affine, all {keep} kept parents", aff, calib, h, parents=keep),
        C.affine("cip-affine fitted under the interchanges (p=0.5)", aff, x_int, h_int,
                 select_on=calib, target=calib[i]),
        C.affine(f"cip-affine fitted under the interchanges, all {keep} parents", aff, x_int,
                 h_int, parents=keep, select_on=calib, target=calib[i]),
        C.affine("vbp's set + cip-affine fit", comp["vbp"], calib, h),
        C.affine("scmopt's set + cip-affine fit", scm, calib, h),
    ]  # fmt: skip
    x_s, i_s = C.interchange_sample(calib, scm.kept, n, seed=12345)
    out.append(C.affine(f"scmopt's set, fitted under the interchanges, all {keep} parents",
                        scm, x_s, h[i_s], parents=keep, select_on=calib,
                        target=calib[i_s]))  # fmt: skip
    return out


# reproduction check and tables ---------------------------------------------------------------
def reproduction(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r["model"] == "mlp_digits" and r["method"] in PAPER:
            ok = abs(r["iia"] - PAPER[r["method"]]) <= 0.01
            out.append({"method": r["method"], "measured": r["iia"], "std": r["iia_std"],
                        "paper": PAPER[r["method"]], "pass": ok})  # fmt: skip
            print(
                f"{'PASS' if ok else 'FAIL'} {r['method']:10s} {r['iia']:.4f} +- "
                f"{r['iia_std']:.4f} vs {PAPER[r['method']]:.3f} (tolerance 0.01)"
            )
    return out


def markdown(rows: list[dict]) -> str:
    def pm(r, k):
        return f"{r[k]:.3f} ± {r[k + '_std']:.3f}"

    main = [r for r in rows if r["family"] != "ablation"]
    out = ["| model | layer (units) | method | singleton IIA | cell-aligned IIA | fidelity | "
           "margin (singleton / cell) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in main:
        out.append(f"| {r['model']} | `{r['cut']}` ({r['units']}) | {r['method']} | "
                   f"{pm(r, 'iia')} | {pm(r, 'iia_cell')} | {r['fidelity']:.3f} | "
                   f"{r['margin']:+.3f} / {r['margin_cell']:+.3f} |")  # fmt: skip
    models = list(dict.fromkeys(r["model"] for r in rows))
    for title, value in (
        ("singleton / cell-aligned IIA", lambda r: f"{r['iia']:.3f} / {r['iia_cell']:.3f}"),
        ("share of the removed units' logit variance explained, plain / interchanges",
         lambda r: "–" if r.get("explained_plain") is None
         else f"{r['explained_plain']:.2f} / {r['explained_interchange']:.2f}"),
    ):  # fmt: skip
        out += ["", f"{title}:", "", "| variant | " + " | ".join(models) + " |",
                "|---" * (len(models) + 1) + "|"]  # fmt: skip
        cells: dict[str, dict[str, str]] = {}
        for r in rows:
            if r["family"] in ("companion", "scmopt", "ablation") and r["method"] != "random":
                name = re.sub(r"all \d+ ", "all K ", r["method"])
                cells.setdefault(name, {})[r["model"]] = value(r)
        for name, by in cells.items():
            out.append(f"| {name} | " + " | ".join(by.get(m, "") for m in models) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0, help="scmopt's search seed")
    ap.add_argument("--no-ablations", dest="ablations", action="store_false")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--name", default="companion")
    ap.add_argument("--tables", action="store_true",
                    help="only print the tables of benchmarks/<name>.json")  # fmt: skip
    args = ap.parse_args()
    if args.tables:
        print(markdown(json.loads((B.OUT / f"{args.name}.json").read_text())["rows"]))
        return
    rows, info = [], {}
    for name in args.models:
        r, info[name] = run(name, args)
        rows += r
    check = reproduction(rows)
    meta = {"seeds": args.seeds, "trials": args.trials, "p": args.p, "keep": args.keep,
            "search_seed": args.seed, "layers": info, "reproduction": check,
            "command": " ".join(["python tools/bench_companion.py", *sys.argv[1:]])}  # fmt: skip
    B.write_results(args.name, rows, meta)
    if args.markdown:
        print(markdown(rows))


if __name__ == "__main__":
    main()
