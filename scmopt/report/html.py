"""The compression report: JSON for machines, one self-contained HTML page for people."""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import networkx as nx

from scmopt.plan import Plan
from scmopt.report import abstraction, charts
from scmopt.report.svg import COLORS, FONT
from scmopt.runtime import work
from scmopt.units.analysis import UnitGraph


def unit_counts(ug: UnitGraph, plan: Plan) -> dict[str, int]:
    c = plan.counts()
    total, prunable = len(ug.units), len(ug.prunable)
    # kept counts every surviving unit, frozen ones included
    return {"total": total, "prunable": prunable, "kept": total - len(plan.actions),
            "constant": c["constant"], "folded": c["folded"],
            "frozen": total - prunable}  # fmt: skip


def group_rows(ug: UnitGraph, plan: Plan) -> list[dict]:
    """Per group: its units and what the plan does to them, what the units are (`kind`: heads,
    FFN neurons, channels, ...), its span of layers in the abstraction graph and the groups it
    feeds (with the edge kind: flow, residual, gate, concat)."""
    ab = abstraction.build(ug)
    rows = []
    for g in ug.groups.values():
        kinds = Counter(plan.actions[u].kind if u in plan.actions else "kept" for u in g.units)
        frozen = sum(1 for u in g.units if not ug.units[u].prunable)
        node = ab.nodes[g.id]
        feeds = sorted({(e.dst, e.kind) for e in ab.edges if e.src == g.id})
        rows.append({"id": g.id, "kind": node.kind, "producers": g.producers,
                     "consumers": g.consumers, "cuts": g.cuts, "units": len(g.units),
                     "kept": kinds["kept"], "constant": kinds["constant"],
                     "folded": kinds["folded"], "frozen": frozen,
                     "layers": [node.start, node.end],
                     "feeds": [{"group": d, "kind": k} for d, k in feeds]})  # fmt: skip
    return rows


def group_dag(ug: UnitGraph) -> nx.DiGraph:
    """Groups linked when a consumer of one group's cut produces channels of another (cyclic
    for residual and squeeze-excite blocks; the drawing uses abstraction.build)."""
    dag = nx.DiGraph()
    owner = {p: g.id for g in ug.groups.values() for p in g.producers}
    for g in ug.groups.values():
        dag.add_node(g.id)
        for c in g.consumers:
            if c in owner and owner[c] != g.id:
                dag.add_edge(g.id, owner[c])
    return dag


def write_json(report: Mapping, path: str | Path) -> None:
    doc = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    Path(path).write_text(json.dumps(doc, indent=2, default=float))


def detail(report: Mapping) -> Mapping:
    """The fidelity detail (risk, agreement, IIA, certificate, the search's metrics):
    report["validation"], or report["fidelity"] in reports written before it was one number."""
    fid = report.get("fidelity")
    return fid if isinstance(fid, Mapping) else report.get("validation") or {}


def _fidelity(report: Mapping) -> float | None:
    fid = report.get("fidelity")
    return fid.get("agreement") if isinstance(fid, Mapping) else fid


def write_html(report: Mapping, path: str | Path, ug: UnitGraph) -> None:
    Path(path).write_text(render_html(report, ug))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _unknown_flops(flops: dict) -> str:
    """' (lower bound: N linear nodes of unknown shape ...)' when the cost model reported any."""
    unknown = flops.get("unknown") or {}
    parts = [f"{len(v)} {k}" for k, v in unknown.items() if v]
    if not parts:
        return ""
    names = sorted({n for v in unknown.values() for n in v})
    shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
    return html.escape(f" (lower bound: linear nodes of unknown shape counted as 0, "
                       f"{' / '.join(parts)}: {shown})")  # fmt: skip


def trajectory_points(report: Mapping) -> tuple[list[float], dict[str, list], int | None, str]:
    """The search trajectory as chart data: accepted rounds in search order, one point per
    number of units kept (refits at the same size update it), ending at the plan the search
    chose with its measured risk, fidelity and IIA. Returns (xs, series, chosen index, legend
    text of the chosen point)."""
    points: list[dict] = []
    for t in report.get("trajectory") or []:
        if not t.get("accepted", True):
            continue  # rejected proposals would zig-zag the lines
        if points and points[-1].get("kept") == t.get("kept"):
            points[-1] = {**points[-1], **{k: v for k, v in t.items() if v is not None}}
        else:
            points.append(dict(t))
    search = detail(report).get("search") or {}
    chosen, label = None, "chosen plan"
    if search.get("kept") is not None:
        final = {k: search.get(k) for k in ("kept", "risk", "fidelity", "iia")}
        if points and points[-1].get("kept") == final["kept"]:
            points[-1] = {**points[-1], **{k: v for k, v in final.items() if v is not None}}
        else:
            points.append(final)
        chosen = len(points) - 1
        shown = [f"{final['kept']} kept"] + [
            f"{name} {_fmt(final[k])}"
            for k, name in (("risk", "risk"), ("fidelity", "fidelity"), ("iia", "IIA"))
            if final[k] is not None
        ]
        label = "chosen plan (as the search measured it): " + ", ".join(shown)
    xs = [float(p.get("kept", i)) for i, p in enumerate(points)]
    keys = {"measured risk": "risk", "predicted risk": "predicted_risk", "fidelity": "fidelity",
            "IIA": "iia"}  # fmt: skip
    series = {name: [p.get(k) for p in points] for name, k in keys.items()}
    return xs, series, chosen, label


def _table(header: list[str], rows: list[list[str]], empty: str) -> str:
    """An HTML table, or `empty` as a sentence when there are no rows."""
    if not rows:
        return f'<p class="empty">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: Mapping, ug: UnitGraph) -> str:
    u, fid = report["units"], detail(report)
    tot = max(u["total"], 1)
    rows = [
        ("units kept / total", f"{u['kept']} / {u['total']} ({u['kept'] / tot:.0%})"),
        ("constant / folded / frozen", f"{u['constant']} / {u['folded']} / {u['frozen']}"),
        ("parameters", f"{report['params']['before']:,} → {report['params']['after']:,}"),
        (
            "FLOPs / sample",
            f"{report['flops']['before']:,} → {report['flops']['after']:,}"
            + _unknown_flops(report["flops"]),
        ),
        ("interventional risk (normalised)", _fmt(fid.get("risk"))),
        (
            f"fidelity ({fid.get('metric', 'top1')} agreement)",
            _fmt(_fidelity(report))
            + (
                f" (5th percentile {_fmt(fid['agreement_p5'])})"
                if fid.get("agreement_p5") is not None
                else ""
            ),
        ),
        (f"IIA (mean over cuts, p = {fid.get('iia_p', 0.5):g})", _fmt(fid.get("iia"))),
        ("IIA under the abstraction's alignment (cells)", _fmt(fid.get("iia_cells"))),
        ("compile max abs error vs simulation", _fmt(report.get("compile_max_abs_error"))),
        ("time (s)", _fmt(report["timing_s"].get("total"))),
        ("work (forward-pass equivalents)", work.describe(report.get("work") or {})),
    ]
    if report.get("accuracy"):
        acc = report["accuracy"]
        rows.insert(7, ("accuracy", f"{acc['before']:.4f} → {acc['after']:.4f}"))
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    cert = fid.get("certificate") or {}
    cert_text = (
        f"From the measured logit distortion D2 = {_fmt(cert.get('d2'))} and the margin "
        f"distribution of the original model, P(top-1 flip) ≤ P(margin ≤ 2ε) + D2/ε² = "
        f"<b>{_fmt(cert.get('bound'))}</b> (best ε = {_fmt(cert.get('epsilon'))}), i.e. fidelity "
        f"≥ {_fmt(1 - cert['bound']) if 'bound' in cert else '?'}; measured fidelity "
        f"{_fmt(_fidelity(report))} on {fid.get('samples', '?')} held-out samples."
        if cert
        else "No certificate (no data)."
    )
    xs, series, chosen, chosen_label = trajectory_points(report)
    chart_traj = charts.line_chart("Search trajectory", xs, series, "prunable units kept",
                                   "value", chosen, chosen_label)  # fmt: skip
    chart_scores = charts.histogram(
        "Score distribution (second-order risk per unit)",
        list((report.get("scores") or {}).values()),
        "score",
    )
    ab = abstraction.build(ug)
    groups = report["groups"]
    kind = {n.group: n.kind for n in ab.nodes.values()}
    labels = [f"{g['id']} {abstraction.producers_text(g['producers'], g['cuts'])} · "
              f"{kind.get(g['id'], 'units')}" for g in groups]  # fmt: skip
    tips = [f"{g['id']}: {g['kept']} of {g['units']} {kind.get(g['id'], 'units')} kept "
            f"({g['folded']} folded, {g['constant']} constant, {g['frozen']} frozen); producers: "
            f"{', '.join(g['producers']) or 'none (graph input)'}" for g in groups]  # fmt: skip
    chart_groups = charts.stacked_bars(
        "Units per layer group",
        labels,
        {
            "kept": [g["kept"] - g["frozen"] for g in groups],
            **{k: [g[k] for g in groups] for k in ("folded", "constant", "frozen")},
        },
        tips,
        colors=[COLORS[2], COLORS[0], COLORS[3], "#aaa"],
    )
    chart_graph = abstraction.draw(
        ab, {g["id"]: g for g in groups}, "Surviving mechanisms (fill = fraction of units kept)"
    )
    frozen = Counter(ug.frozen().values())
    frozen_table = _table(["units", "reason"],
                          [[str(n), html.escape(r)] for r, n in frozen.most_common(20)],
                          "no frozen units")  # fmt: skip
    group_table = _table(
        ["group", "units are", "producers", "units", "kept", "folded", "constant", "frozen"],
        [[g["id"], html.escape(kind.get(g["id"], "units")),
          html.escape(", ".join(g["producers"][:4]) + (" …" if len(g["producers"]) > 4 else "")),
          *(str(g[k]) for k in ("units", "kept", "folded", "constant", "frozen"))]
         for g in groups],
        "no layer groups",
    )  # fmt: skip
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.get("notes", []))
    per_cells = fid.get("iia_cells_per_cut") or {}
    cell_rows = [[html.escape(t), html.escape(k), str(len(v)), html.escape(", ".join(v[:6])
                  + (" …" if len(v) > 6 else "")), _fmt(per_cells.get(t, ""))]
                 for t, c in (report.get("cells") or {}).items()
                 for k, v in sorted(c.items(), key=lambda kv: -len(kv[1]))[:12]]  # fmt: skip
    cells_table = _table(["cut", "kept unit", "cell size", "folded units in its cell",
                          "cut's cell-aligned IIA"], cell_rows,
                         "no folds: every cell is a kept unit alone")  # fmt: skip
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>scmopt report: {html.escape(str(report.get("input", "")))}</title>
<style>body{{font-family:{FONT};max-width:1200px;margin:20px auto;padding:0 12px;color:#222}}
table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:left}}.charts{{display:flex;flex-wrap:wrap;gap:12px}}.empty{{color:#666}}
.scroll{{overflow-x:auto}}</style></head><body>
<h1>scmopt: causal abstraction report</h1>
<p>{html.escape(str(report.get("input", "")))} → {html.escape(str(report.get("output", "")))}
 · criterion <b>{html.escape(str(report.get("settings", {}).get("criterion", "")))}</b></p>
<table>{table}</table>
<h2>Fidelity certificate</h2><p>{cert_text}</p>
<ul>{notes}</ul>
<div class="charts">{chart_traj}{chart_scores}</div>
<div class="scroll">{chart_groups}</div>
<h2>Abstraction</h2>
<p>One box per layer group: how many of its units survive and what they are (heads, FFN
neurons, channels, neurons). Top to bottom in the topological order of the cuts; a group that
spans several cuts (a residual stage) is one tall box, and the branches beside it write back
into it. Hover a box or an edge for the producers and cut tensors.</p>
<div class="scroll">{chart_graph}</div>
<h2>Layer groups</h2>{group_table}
<h2>Alignment (cells)</h2>
<p>Each folded unit is merged into the cell of the kept unit that carries most of its fold; an
interchange on a kept unit swaps its whole cell in the original (the cell-aligned IIA). The
largest cells per cut (all of them in the JSON report, key <code>cells</code>):</p>
<div class="scroll">{cells_table}</div>
<h2>Frozen units</h2>{frozen_table}
</body></html>"""
