"""The compression report: JSON for machines, one self-contained HTML page for people."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

import networkx as nx

from scmopt.plan import Plan
from scmopt.report import svg
from scmopt.units.analysis import UnitGraph


def unit_counts(ug: UnitGraph, plan: Plan) -> dict[str, int]:
    c = plan.counts()
    total, prunable = len(ug.units), len(ug.prunable)
    # kept counts every surviving unit, frozen ones included
    return {"total": total, "prunable": prunable, "kept": total - len(plan.actions),
            "constant": c["constant"], "folded": c["folded"],
            "frozen": total - prunable}  # fmt: skip


def group_rows(ug: UnitGraph, plan: Plan) -> list[dict]:
    rows = []
    for g in ug.groups.values():
        kinds = Counter(plan.actions[u].kind if u in plan.actions else "kept" for u in g.units)
        frozen = sum(1 for u in g.units if not ug.units[u].prunable)
        rows.append({"id": g.id, "producers": g.producers, "consumers": g.consumers,
                     "cuts": g.cuts, "units": len(g.units), "kept": kinds["kept"],
                     "constant": kinds["constant"], "folded": kinds["folded"],
                     "frozen": frozen})  # fmt: skip
    return rows


def group_dag(ug: UnitGraph) -> nx.DiGraph:
    """Groups linked when a consumer of one group's cut produces channels of another."""
    dag = nx.DiGraph()
    owner = {p: g.id for g in ug.groups.values() for p in g.producers}
    for g in ug.groups.values():
        dag.add_node(g.id)
        for c in g.consumers:
            if c in owner and owner[c] != g.id:
                dag.add_edge(g.id, owner[c])
    return dag


def write_json(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, default=float))


def write_html(report: dict, path: str | Path, ug: UnitGraph) -> None:
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


def render_html(report: dict, ug: UnitGraph) -> str:
    u, fid = report["units"], report["fidelity"]
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
        ("fidelity (top-1 agreement)", _fmt(fid.get("agreement"))),
        (f"IIA (mean over cuts, p = {fid.get('iia_p', 0.5):g})", _fmt(fid.get("iia"))),
        ("compile max abs error vs simulation", _fmt(report.get("compile_max_abs_error"))),
        ("time (s)", _fmt(report["timing_s"].get("total"))),
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
        f"{_fmt(fid.get('agreement'))} on {fid.get('samples', '?')} held-out samples."
        if cert
        else "No certificate (no data)."
    )
    # accepted rounds only, in search order (rejected proposals would zig-zag the lines)
    traj = [t for t in report.get("trajectory") or [] if t.get("accepted", True)]
    xs = [t.get("kept", i) for i, t in enumerate(traj)]
    chart_traj = svg.line_chart(
        "Search trajectory",
        xs,
        {
            "measured risk": [t.get("risk") for t in traj],
            "predicted risk": [t.get("predicted_risk") for t in traj],
            "fidelity": [t.get("fidelity") for t in traj],
            "IIA": [t.get("iia") for t in traj],
        },
        "units kept",
        "value",
    )
    groups = report["groups"]
    chart_groups = svg.stacked_bars(
        "Units per layer group",
        [f"{g['id']} {g['producers'][0] if g['producers'] else ''}" for g in groups],
        {
            "kept": [g["kept"] - g["frozen"] for g in groups],
            **{k: [g[k] for g in groups] for k in ("folded", "constant", "frozen")},
        },
    )
    chart_scores = svg.histogram(
        "Score distribution (second-order risk per unit)",
        list((report.get("scores") or {}).values()),
        "score",
    )
    dag = group_dag(ug)
    by_id = {g["id"]: g for g in groups}
    layers = (
        [
            [
                (
                    gid,
                    f"{gid} {by_id[gid]['kept']}/{by_id[gid]['units']}",
                    f"{gid}: kept {by_id[gid]['kept']} of "
                    f"{by_id[gid]['units']}; producers {', '.join(by_id[gid]['producers'][:3])}",
                    by_id[gid]["kept"] / max(by_id[gid]["units"], 1),
                )
                for gid in sorted(gen)
            ]
            for gen in nx.topological_generations(dag)
        ]
        if nx.is_directed_acyclic_graph(dag)
        else []
    )
    chart_graph = svg.layered_graph(
        "Surviving mechanisms (fill = fraction of units kept)", layers, list(dag.edges)
    )
    frozen = Counter(ug.frozen().values())
    frozen_rows = "".join(
        f"<tr><td>{n}</td><td>{html.escape(r)}</td></tr>" for r, n in frozen.most_common(20)
    )
    group_table = "".join(
        f"<tr><td>{g['id']}</td><td>{html.escape(', '.join(g['producers'][:4]))}</td>"
        f"<td>{g['units']}</td><td>{g['kept']}</td><td>{g['folded']}</td>"
        f"<td>{g['constant']}</td><td>{g['frozen']}</td></tr>"
        for g in groups
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.get("notes", []))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>scmopt report: {html.escape(str(report.get("input", "")))}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:20px auto;color:#222}}
table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:left}}.charts{{display:flex;flex-wrap:wrap;gap:12px}}</style></head><body>
<h1>scmopt: causal abstraction report</h1>
<p>{html.escape(str(report.get("input", "")))} → {html.escape(str(report.get("output", "")))}
 · criterion <b>{html.escape(str(report.get("settings", {}).get("criterion", "")))}</b></p>
<table>{table}</table>
<h2>Fidelity certificate</h2><p>{cert_text}</p>
<ul>{notes}</ul>
<div class="charts">{chart_traj}{chart_scores}</div>
<div>{chart_groups}</div>
<h2>Abstraction</h2><div style="overflow-x:auto">{chart_graph}</div>
<h2>Layer groups</h2><table><tr><th>group</th><th>producers</th><th>units</th><th>kept</th>
<th>folded</th><th>constant</th><th>frozen</th></tr>{group_table}</table>
<h2>Frozen units</h2><table><tr><th>units</th><th>reason</th></tr>{frozen_rows}</table>
</body></html>"""
