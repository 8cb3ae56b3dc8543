"""Markdown tables of BENCHMARKS.md from the result files in benchmarks/*.json.

    python tools/bench_tables.py            # print every section's tables
    python tools/bench_tables.py --write    # replace the generated blocks in BENCHMARKS.md

Each generated block sits between `<!-- BEGIN <name> -->` and `<!-- END <name> -->` markers;
the prose around them is written by hand from these numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

DOC = B.ROOT / "BENCHMARKS.md"


def load(name: str) -> dict | None:
    p = B.OUT / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def f3(v) -> str:
    return B.fmt(v, 3)


def machine_block(doc: dict) -> str:
    m = doc["machine"]
    return (f"_Run {m['date']} on {B.machine_line(m)}; load average at start "
            f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}._")  # fmt: skip


def pivot(rows, key, value, cols, fmt=f3, row_keys=("model", "method")) -> str:
    table: dict = defaultdict(dict)
    order = []
    for r in rows:
        k = tuple(r.get(x) for x in row_keys)
        if k not in table:
            order.append(k)
        table[k][r[key]] = r
    head = "| " + " | ".join(row_keys) + " | " + " | ".join(f"{key} {c}" for c in cols) + " |"
    out = [head, "|" + "---|" * (len(row_keys) + len(cols))]
    for k in order:
        cells = []
        for c in cols:
            r = table[k].get(c)
            if r is None:
                cells.append("")
            elif "error" in r:
                cells.append("error")
            else:
                cells.append(value(r) if callable(value) else fmt(r.get(value)))
        out.append("| " + " | ".join(str(x) for x in k) + " | " + " | ".join(cells) + " |")
    return "\n".join(out)


# sections ----------------------------------------------------------------------------------
def quality(doc) -> str:
    rows = doc["rows"]
    ratios = doc["meta"]["ratios"]
    parts = [machine_block(doc)]
    parts.append(
        "**Fidelity / IIA** on the test split (top-1 agreement with the original on plain "
        "inputs / interchange-intervention accuracy), by keep ratio (fraction of "
        "prunable units kept)\n"
    )
    parts.append(
        pivot(rows, "keep", lambda r: f"{f3(r['test_agreement'])} / {f3(r['test_iia'])}", ratios)
    )
    parts.append(
        "**Normalised interventional risk / test accuracy** of the compiled model "
        "(risk: lower is better)\n"
    )
    parts.append(
        pivot(rows, "keep", lambda r: f"{f3(r['test_risk'])} / {f3(r['test_accuracy'])}", ratios)
    )
    units = [r for r in rows if r["method"] == "curvature+fold" and "error" not in r]
    parts.append("**Units kept** (scmopt count, frozen included) and test accuracy of the "
                 "original\n")  # fmt: skip
    parts.append(pivot(units, "keep", lambda r: f"{r['units_total']}/{r['units_before']}",
                       ratios, row_keys=("model",)))  # fmt: skip
    parts.append(wins(rows, ratios))
    t = load("quality_targets")
    if t:
        parts.append(
            "**Stopped by a quality target** instead of a keep ratio (the target is "
            "checked by the search on its held-out part of the calibration split; the "
            "numbers here are on the test split)\n"
        )
        out = [
            "| model | rule | method | units kept | fewer units | fid. | IIA | risk | acc. | s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in t["rows"]:
            if "error" in r:
                out.append(
                    f"| {r['model']} | {r['rule']} | {r['method']} | error: "
                    f"{r['error'][:80]} | | | | | | |"
                )
                continue
            out.append(f"| {r['model']} | {r['rule']} | {r['method']} | {r['units_total']}/"
                       f"{r['units_before']} | {r['unit_reduction'] * 100:.0f}% | "
                       f"{f3(r['test_agreement'])} | {f3(r['test_iia'])} | {f3(r['test_risk'])} "
                       f"| {f3(r['test_accuracy'])} | {r['seconds']:.1f} |")  # fmt: skip
        parts.append("\n".join(out))
    return "\n\n".join(parts)


def wins(rows, ratios) -> str:
    """Where curvature+fold is (not) ahead of every other method."""
    by = defaultdict(dict)
    for r in rows:
        if "error" not in r:
            by[(r["model"], r["keep"])][r["method"]] = r
    out = ["**Is curvature+fold ahead of every baseline?** (per model and ratio; best other "
           "method in brackets when it is not)\n",
           "| model | keep | fidelity | IIA | risk |", "|---|---|---|---|---|"]  # fmt: skip
    for (model, keep), d in sorted(by.items(), key=lambda x: (x[0][0], -x[0][1])):
        me = d.get("curvature+fold")
        if me is None:
            continue
        cells = []
        for key, better in (("test_agreement", max), ("test_iia", max), ("test_risk", min)):
            others = {m: r[key] for m, r in d.items() if m != "curvature+fold"
                      and r.get(key) is not None}  # fmt: skip
            if not others or me.get(key) is None:
                cells.append("–")
                continue
            best_m = better(others, key=others.get)
            ok = me[key] >= others[best_m] if better is max else me[key] <= others[best_m]
            cells.append("yes" if ok else f"no ({best_m} {f3(others[best_m])} vs {f3(me[key])})")
        out.append(f"| {model} | {keep} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def curvature(doc) -> str:
    rows = [r for r in doc["rows"] if "error" not in r]
    out = [machine_block(doc), "| model | scale s | keep | method | fidelity | IIA | risk | "
           "kept per cut |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["model"], r["keep"] * -1, r["method"], r["scale"])):
        kpc = " / ".join(f"{r['kept_per_cut'][t]}" for t in r["kept_per_cut"])
        out.append(f"| {r['model']} | {r['scale']:g} | {r['keep']} | {r['method']} | "
                   f"{f3(r['test_agreement'])} | {f3(r['test_iia'])} | {f3(r['test_risk'])} | "
                   f"{kpc} |")  # fmt: skip
    errs = [r for r in doc["rows"] if "error" in r]
    if errs:
        out.append(
            "\nErrors: "
            + "; ".join(
                f"{r['model']} s={r['scale']:g} {r['method']} keep {r['keep']}: {r['error']}"
                for r in errs
            )
        )
    return "\n".join(out)


def speed(doc) -> str:
    rows = doc["rows"]
    out = [machine_block(doc),
           "| model | scmopt s (analysis) | units | fid. test | ablation s (analysis) | units | "
           "fid. test | speed-up vs ablation | curvature stage s: scmopt / ablation (speed-up) | "
           "greedy s | greedy fid. test | speed-up vs greedy |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        g = r.get("greedy_s")
        gs = (
            "–"
            if g is None
            else (
                f"{g:.0f} (extrapolated from {r['greedy_rounds_done']} of "
                f"{r['greedy_rounds_needed']} rounds)"
                if r.get("greedy_extrapolated")
                else f"{g:.1f}"
            )
        )
        out.append(
            f"| {r['model']} | {r['scmopt_s']:.1f} ({r['scmopt_analysis_s']:.1f}) | "
            f"{r['scmopt_units']} | {f3(r['scmopt_test_agreement'])} | {r['ablation_s']:.1f} "
            f"({r['ablation_analysis_s']:.1f}) | {r['ablation_units']} | "
            f"{f3(r['ablation_test_agreement'])} | {r['speedup_vs_ablation']:.1f}x | "
            f"{_stage(r, 'curvature')} | {gs} | "
            f"{f3(r.get('greedy_test_agreement'))} | "
            f"{B.fmt(r.get('speedup_vs_greedy'), 1)}x |")  # fmt: skip
    return "\n".join(out)


def _stage(r: dict, key: str) -> str:
    """One analysis stage's seconds, scmopt / ablation, and their ratio."""
    a = (r.get("scmopt_timing") or {}).get("search", {}).get(key)
    b = (r.get("ablation_timing") or {}).get("search", {}).get(key)
    if not a or not b:
        return "–"
    return f"{a:.2f} / {b:.2f} ({b / a:.0f}x)"


def deploy(doc) -> str:
    rows = doc["rows"]
    levels = doc["meta"].get("levels", ["all"])
    batches = doc["meta"].get("batches", [1, 64])
    lat_cols = [(lv, b) for lv in levels for b in batches]
    head = (
        "| model | variant | units | params | FLOPs | FLOP red. | fid. test | "
        + " | ".join(f"{lv} b{b} ms (speed-up)" for lv, b in lat_cols)
        + " |"
    )
    out = [machine_block(doc), head, "|" + "---|" * (7 + len(lat_cols))]
    for r in rows:
        lat = " | ".join(f"{r[f'{lv}_b{b}_ms']:.4f} ({r[f'{lv}_b{b}_speedup']:.2f}x)"
                         for lv, b in lat_cols)  # fmt: skip
        out.append(f"| {r['model']} | {r['variant']} | {r['units']} | {r['params']} | "
                   f"{r['flops']} | {r['flop_reduction']:.2f}x | {f3(r['test_agreement'])} | "
                   f"{lat} |")  # fmt: skip
    out.append("\n**Latency gain / FLOP reduction** of scmopt's output (goal >= 0.8)\n")
    out.append("| model | variant | " + " | ".join(f"{lv} b{b}" for lv, b in lat_cols) + " |")
    out.append("|" + "---|" * (2 + len(lat_cols)))
    for r in rows:
        if "scmopt" not in r["variant"]:
            continue
        out.append(
            f"| {r['model']} | {r['variant']} | "
            + " | ".join(f"{r[f'{lv}_b{b}_speedup_over_flop_reduction']:.2f}" for lv, b in lat_cols)
            + " |"
        )
    return "\n".join(out)


def peers(doc) -> str:
    rows = doc["rows"]
    ratios = doc["meta"]["ratios"]

    def cell(r):
        mark = "" if r.get("reached") else "*"
        return (f"{f3(r['test_agreement'])} / {f3(r['test_iia'])} / {f3(r['test_accuracy'])} "
                f"({r['units_total']}{mark})")  # fmt: skip

    parts = [
        machine_block(doc),
        "Cells: fidelity / IIA / accuracy on the test split (units "
        "kept; * = the peer cannot reach the target count, closest count shown).\n",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == model]
        targets = {r["keep"]: r["target_units"] for r in sub}
        parts.append(
            f"**{model}** (target units: "
            + ", ".join(f"keep {k} -> {v}" for k, v in targets.items())
            + ")\n"
        )
        parts.append(pivot(sub, "keep", cell, ratios, row_keys=("method",)))
    parts.append(peer_wins(rows, ratios))
    return "\n\n".join(parts)


def peer_wins(rows, ratios) -> str:
    by = defaultdict(dict)
    for r in rows:
        if "error" not in r:
            by[(r["model"], r["keep"])][r["method"]] = r
    out = ["**Best peer at the same unit count** (peers that reached the target count only)\n",
           "| model | keep | scmopt curvature+fold fid. / IIA | best peer by fidelity | "
           "best peer by IIA |", "|---|---|---|---|---|"]  # fmt: skip
    for (model, keep), d in sorted(by.items(), key=lambda x: (x[0][0], -x[0][1])):
        me = d.get("scmopt curvature+fold")
        others = {m: r for m, r in d.items() if not m.startswith("scmopt") and r.get("reached")}
        if me is None or not others:
            continue
        bf = max(others, key=lambda m: others[m]["test_agreement"])
        bi = max(others, key=lambda m: others[m]["test_iia"] or 0)
        out.append(f"| {model} | {keep} | {f3(me['test_agreement'])} / {f3(me['test_iia'])} | "
                   f"{bf} {f3(others[bf]['test_agreement'])} | {bi} "
                   f"{f3(others[bi]['test_iia'])} |")  # fmt: skip
    return "\n".join(out)


def causal(doc) -> str:
    rows = doc["rows"]
    al = doc["meta"].get("alignment", {})
    cuts = list(al)
    cols = [(cuts[0], "v1"), (cuts[0], "v2"), (cuts[0], "v1+v2")] + [(c, "v1+v2") for c in cuts[1:]]
    by: dict = defaultdict(dict)
    order = []
    for r in rows:
        if r["method"] not in by:
            order.append(r["method"])
        by[r["method"]][(r["cut"], r["variables"])] = r
    out = [machine_block(doc), "Alignment (calibration split): " + "; ".join(
        f"`{t}` (hidden layer {i + 1}): {v['v1']} units v1, {v['v2']} v2, {v['none']} none"
        for i, (t, v) in enumerate(al.items())),
        "", "Cells: IIA against the high-level counterfactual on all test pairs / on the "
        "informative pairs only (aligned units kept/aligned).", "",
        "| method | units | fid. | IIA vs original | "
        + " | ".join(f"layer {cuts.index(c) + 1}, {v}" for c, v in cols) + " |",
        "|" + "---|" * (4 + len(cols))]  # fmt: skip
    for m in order:
        d = by[m]
        first = next(iter(d.values()))
        cells = []
        for key in cols:
            r = d.get(key)
            cells.append("" if r is None else
                         f"{f3(r['iia_high_level'])} / {f3(r['iia_high_level_informative'])} "
                         f"({r['aligned_kept']}/{r['aligned_units']})")  # fmt: skip
        out.append(
            f"| {m} | {first['units']} | {f3(first['test_agreement'])} | "
            f"{f3(first['iia_vs_original'])} | " + " | ".join(cells) + " |"
        )
    singles = [(c, v) for c in cuts[1:] for v in ("v1", "v2")]
    if singles:
        out.append(
            "\nSingle variables at the later layers (original): "
            + "; ".join(
                f"layer {cuts.index(c) + 1} {v}: {f3(by['original'][(c, v)]['iia_high_level'])} / "
                f"{f3(by['original'][(c, v)]['iia_high_level_informative'])}"
                for c, v in singles
                if (c, v) in by.get("original", {})
            )
        )
    return "\n".join(out)


def scaling(doc) -> str:
    rows = doc["rows"]
    out = [machine_block(doc), "| sweep | model | samples | units | analysis s (median) | "
           "wall s | RSS before MB | peak RSS during MB | growth MB |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(f"| {r['sweep']} | {r['model']} | {r['samples']} | {r['units_total']} | "
                   f"{r['analysis_s']:.2f} | {r['wall_s']:.2f} | {r['rss_before_mb']:.0f} | "
                   f"{r['peak_rss_mb']:.0f} | {r['rss_growth_mb']:.0f} |")  # fmt: skip
    for k in ("fit_time_vs_samples", "fit_memory_vs_samples"):
        f = doc["meta"].get(k)
        if f:
            out.append(f"\n{k.replace('_', ' ')}: {f['per_unit'] * 1000:.4g} per 1000 samples + "
                       f"{f['intercept']:.3g}, R^2 {f['r2']:.3f}, log-log slope "
                       f"{f['loglog_slope']:.2f}")  # fmt: skip
    return "\n".join(out)


def iia_layer(doc) -> str:
    rows = doc["rows"]
    out = [machine_block(doc),
           "| model | layer (units kept) | method | IIA at the layer | IIA mean over cuts | "
           "fidelity | constant / folded |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(f"| {r['model']} | `{r['cut']}` ({r['kept']}/{r['layer_units']}) | "
                   f"{r['method']} | {f3(r['iia_layer'])} | {f3(r['iia_mean'])} | "
                   f"{f3(r['fidelity'])} | {r['constant']} / {r['folded']} |")  # fmt: skip
    return "\n".join(out)


def swap_p(doc) -> str:
    rows = doc["meta"]["summary"]
    seeds = doc["meta"]["seeds"]
    out = [machine_block(doc),
           f"Test split, evaluated at p = 0.5; median over seeds {', '.join(map(str, seeds))} "
           "(min-max in brackets).", "",
           "| model | keep | units | swap p | fidelity | plain risk | IIA (p = 0.5) | "
           "interventional risk (p = 0.5) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def cell(r, m):
        return f"{f3(r[m + '_median'])} ({f3(r[m + '_min'])}-{f3(r[m + '_max'])})"

    for r in rows:
        out.append(f"| {r['model']} | {r['keep']} | {r['units']} | {r['swap_p']} | "
                   f"{cell(r, 'test_agreement')} | {cell(r, 'test_risk_plain')} | "
                   f"{cell(r, 'test_iia')} | {cell(r, 'test_risk')} |")  # fmt: skip
    return "\n".join(out)


def large(doc) -> str:
    out = [machine_block(doc),
           "| model | input | units (cuts) | samples | keep | kept | wall s | stats s | "
           "curvature s | selection s | measure s | peak RSS MB | FLOPs before -> after | "
           "compile error |", "|---" * 14 + "|"]  # fmt: skip
    for r in doc["rows"]:
        s = r["timing"]["search"]
        out.append(f"| {r['model']} | {'x'.join(map(str, r['input_shape']))} | {r['units']} "
                   f"({r['cuts']}) | {r['samples']} | {r['keep']} | {r['kept']} | "
                   f"{r['wall_s']:.0f} | {s['stats']:.0f} | {s['curvature']:.0f} | "
                   f"{s['selection']:.0f} | {s['measure']:.0f} | {r['peak_rss_mb']:.0f} | "
                   f"{r['flops_before']:,} -> {r['flops_after']:,} | "
                   f"{r['compile_error']:.1e} |")  # fmt: skip
    return "\n".join(out)


def summary(_doc=None) -> str:
    """The issue's goals against what was measured (each line from one result file)."""
    out = ["| goal | measured | met? |", "|---|---|---|"]
    t = load("quality_targets")
    if t:
        cells, ok = [], True
        for r in t["rows"]:
            if r["method"] != "curvature+fold" or r.get("rule") != "min_iia 0.95":
                continue
            if r["model"] not in B.CNNS:
                continue
            if "error" in r:
                cells.append(f"{r['model']}: error")
                ok = False
                continue
            good = r["unit_reduction"] >= 0.7 and (r["test_iia"] or 0) >= 0.95
            ok &= good
            cells.append(f"{r['model']}: {r['unit_reduction'] * 100:.0f}% fewer units, IIA "
                         f"{f3(r['test_iia'])} test / {f3(r['calib_iia'])} calib")  # fmt: skip
        out.append(
            f"| >= 70% fewer units at >= 95% IIA on every zoo CNN (`min_iia 0.95`) | "
            f"{'; '.join(cells)} | {'yes' if ok and cells else 'no'} |"
        )
    q = load("quality")
    if q:
        for keep, key, goal, label in ((0.3, "test_agreement", 0.95, "fidelity"),
                                       (0.5, "test_iia", 0.95, "IIA")):  # fmt: skip
            got = {r["model"]: r[key] for r in q["rows"] if r["method"] == "curvature+fold"
                   and r["keep"] == keep and "error" not in r}  # fmt: skip
            pick = {m: v for m, v in got.items() if m in ("cnn_digits", "resnet_digits")}
            out.append(
                f"| {label} >= {goal} with <= {int(keep * 100)}% of units kept "
                f"(cnn_digits, resnet_digits; test split) | "
                + ", ".join(f"{m} {f3(v)}" for m, v in got.items())
                + f" | {'yes' if pick and all(v >= goal for v in pick.values()) else 'no'} |"
            )
    sw = load("swap_p")
    if sw:
        got = {(r["model"], r["swap_p"]): r for r in sw["meta"]["summary"]
               if r["keep"] == 0.3 and r["model"] in ("cnn_digits", "resnet_digits")}  # fmt: skip
        cells = [f"{m} p {p}: min {f3(r['test_agreement_min'])} / median "
                 f"{f3(r['test_agreement_median'])}" for (m, p), r in got.items()]  # fmt: skip
        ok = {m: r["test_agreement_min"] >= 0.95 for (m, p), r in got.items() if p == 0.05}
        out.append(
            f"| fidelity >= 0.95 with <= 30% of units kept, `--swap-p` (test split, seeds "
            f"{', '.join(map(str, sw['meta']['seeds']))}) | {'; '.join(cells)} | "
            f"{'yes, with --swap-p 0.05' if ok and all(ok.values()) else 'no'} |"
        )
    if q:
        by = defaultdict(dict)
        for r in q["rows"]:
            if "error" not in r:
                by[(r["model"], r["keep"])][r["method"]] = r
        classic = ("curvature", "layer", "variance", "magnitude", "random")
        n = a_classic = a_all = 0
        for d in by.values():
            me = d.get("curvature+fold")
            if me is None:
                continue
            n += 1
            others = [m for m in d if m != "curvature+fold"]
            a_classic += all(
                me["test_agreement"] >= d[m]["test_agreement"] for m in others if m in classic
            )
            a_all += all(me["test_agreement"] >= d[m]["test_agreement"] for m in others)
        out.append(
            f"| curvature+fold ahead of every baseline at every ratio (test fidelity) | "
            f"ahead of the classic criteria (curvature w/o fold, layer, variance, "
            f"magnitude, random) in {a_classic}/{n} model x ratio cells; also ahead of "
            f"layer+fold and variance+fold in {a_all}/{n} | "
            f"{'yes' if a_all == n else ('classic only' if a_classic == n else 'no')} |"
        )
    sp = load("speed")
    if sp:
        cells = [f"{r['model']} {r['speedup_vs_ablation']:.1f}x" for r in sp["rows"]]
        ok = all(r["speedup_vs_ablation"] >= 20 for r in sp["rows"])
        out.append(
            f"| >= 20x faster than exhaustive ablation (analysis time, same rule) | "
            f"{', '.join(cells)} | {'yes' if ok else 'no'} |"
        )
    de = load("deploy")
    if de:
        cells, ok = [], True
        by = {(r["model"], r["variant"]): r for r in de["rows"]}
        for model in dict.fromkeys(r["model"] for r in de["rows"]):
            parts = []
            for variant in ("scmopt", "scmopt aligned16"):
                r = by.get((model, variant))
                if r is None:
                    continue
                b64 = r.get("all_b64_speedup_over_flop_reduction")
                b1k = r.get("all_b1024_speedup_over_flop_reduction")
                parts.append(f"{variant.replace('scmopt ', '')} {B.fmt(b64, 2)} (b64) / "
                             f"{B.fmt(b1k, 2)} (b1024)")  # fmt: skip
            best = max((by[(model, v)].get("all_b64_speedup_over_flop_reduction") or 0)
                       for v in ("scmopt", "scmopt aligned16") if (model, v) in by)  # fmt: skip
            ok &= best >= 0.8
            cells.append(f"{model}: " + ", ".join(parts))
        out.append(
            f"| compiled latency gain >= 0.8x the FLOP reduction (ORT default level, 1 thread) | "
            f"{'; '.join(cells)} | {'yes' if ok else 'no'} |"
        )
    sc = load("scaling")
    if sc and sc["meta"].get("fit_time_vs_samples"):
        f = sc["meta"]["fit_time_vs_samples"]
        out.append(
            f"| cost linear in samples | analysis time vs samples: R^2 {f['r2']:.3f}, "
            f"log-log slope {f['loglog_slope']:.2f} (1 = linear, 0 = flat) | "
            f"{'yes' if f['loglog_slope'] <= 1.1 else 'no'} |"
        )
    return "\n".join(out)


SECTIONS = {"summary": summary, "quality": quality, "curvature": curvature, "speed": speed,
            "deploy": deploy, "peers": peers, "causal": causal, "scaling": scaling,
            "iia_layer": iia_layer, "swap_p": swap_p, "large": large}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    blocks = {}
    for name, fn in SECTIONS.items():
        if name == "summary":
            blocks[name] = summary()
            continue
        doc = load(name)
        blocks[name] = fn(doc) if doc else "_not run yet_"
    if not args.write:
        for name, text in blocks.items():
            print(f"## {name}\n\n{text}\n")
        return
    text = DOC.read_text()
    for name, block in blocks.items():
        pat = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        text, n = pat.subn(lambda m, b=block: m.group(1) + b + "\n" + m.group(2), text)
        if not n:
            print(f"warning: no markers for {name} in BENCHMARKS.md", file=sys.stderr)
    DOC.write_text(text)


if __name__ == "__main__":
    main()
