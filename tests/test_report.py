"""The HTML report reads well (issue 14 item 6), checked on its SVG without a browser: an
abstraction graph for every zoo model (one node per group, residual and squeeze-excite edges,
layered by the cut DAG), a trajectory that ends at the chosen plan with a legend clear of the
lines, every text inside its view box (estimated widths, scmopt.report.svg.text_box), "no
frozen units" instead of an empty table, heads and FFN neurons named for transformers.
tools/screenshot_report.py renders the same pages in Chromium for a human (not run here)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import graphs
import pytest

import scmopt
from scmopt.report import abstraction, charts, html, svg
from scmopt.report.svg import Box, text_box

ZOO = ["cnn_digits", "resnet_digits", "mobile_digits", "mlp_digits", "equality_mlp"]
NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def runs() -> dict:
    """(report, unit graph, html) per zoo model and for the attention block; fast settings
    (magnitude scores, few samples). cnn_digits with a fidelity rule: its rounds measure no
    risk, only the chosen plan does."""
    out = {}
    for name in ZOO:
        rule = {"min_fidelity": 0.99} if name == "cnn_digits" else {"keep": 0.5}
        res = scmopt.compress(f"models/zoo/{name}.onnx", f"models/zoo/{name}_calib.npz",
                              criterion="magnitude", samples=96, seed=0, **rule)  # fmt: skip
        out[name] = (res.report, res.unit_graph, html.render_html(res.report, res.unit_graph))
    m = graphs.attention_block()
    res = scmopt.compress(m, graphs.sample(m, 64), keep=0.5, criterion="magnitude", seed=0)
    out["attention_block"] = (
        res.report,
        res.unit_graph,
        html.render_html(res.report, res.unit_graph),
    )
    return out


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


GRAPH = "Surviving mechanisms (fill = fraction of units kept)"


def _title(el: ET.Element) -> str:
    t = el.find(f"{NS}text[@class='title']")
    return t.text if t is not None else ""


def chart(page: str, title: str) -> ET.Element:
    (el,) = [s for s in svgs(page) if _title(s) == title]
    return el


def view_box(el: ET.Element) -> Box:
    x, y, w, h = (float(v) for v in el.get("viewBox").split())
    return Box(x, y, x + w, y + h)


def box_of(el: ET.Element) -> Box | None:
    """Bounding box of a rect, circle, line, text, polyline, or a group of them."""
    tag = el.tag.replace(NS, "")
    f = lambda k: float(el.get(k))  # noqa: E731
    if tag == "rect":
        return Box(f("x"), f("y"), f("x") + f("width"), f("y") + f("height"))
    if tag == "circle":
        return Box(f("cx") - f("r"), f("cy") - f("r"), f("cx") + f("r"), f("cy") + f("r"))
    if tag == "line":
        return Box(min(f("x1"), f("x2")), min(f("y1"), f("y2")), max(f("x1"), f("x2")),
                   max(f("y1"), f("y2")))  # fmt: skip
    if tag == "text":
        return text_box(f("x"), f("y"), el.text or "", f("font-size"), el.get("text-anchor"))
    boxes = [b for c in el if (b := box_of(c)) is not None]
    if not boxes:
        return None
    out = boxes[0]
    for b in boxes[1:]:
        out = out.union(b)
    return out


def points(poly: ET.Element) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in p.split(",")) for p in poly.get("points").split()]


# --- the abstraction graph ---------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO + ["attention_block"])
def test_graph_has_one_node_per_group_and_every_group_link(runs, name):
    report, ug, page = runs[name]
    g = chart(page, GRAPH)
    nodes = [n.get("data-group") for n in g.iter(f"{NS}g") if n.get("class") == "node"]
    assert sorted(nodes) == sorted(ug.groups)
    drawn = {(e.get("data-from"), e.get("data-to")) for e in g.iter(f"{NS}path")
             if e.get("class") == "edge"}  # fmt: skip
    dag = html.group_dag(ug)
    assert set(dag.edges) <= drawn, set(dag.edges) - drawn
    # the JSON carries the same: the kind of each group's units and whom it feeds
    rows = {r["id"]: r for r in report["groups"]}
    assert {(a, f["group"]) for a, r in rows.items() for f in r["feeds"]} == drawn


@pytest.mark.parametrize("name", ZOO + ["attention_block"])
def test_graph_edges_start_and_end_on_their_nodes(runs, name):
    _, _, page = runs[name]
    g = chart(page, GRAPH)
    rect = {}
    for n in g.iter(f"{NS}g"):
        if n.get("class") == "node":
            rect[n.get("data-group")] = box_of(n.find(f"{NS}rect"))
    near = lambda b, x, y: b.x0 - 4 <= x <= b.x1 + 4 and b.y0 - 4 <= y <= b.y1 + 4  # noqa: E731
    for e in g.iter(f"{NS}path"):
        if e.get("class") != "edge":
            continue
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", e.get("d"))]
        assert near(rect[e.get("data-from")], nums[0], nums[1]), e.get("d")
        assert near(rect[e.get("data-to")], nums[-2], nums[-1]), e.get("d")
    for a in rect:
        for b in rect:
            assert a == b or not rect[a].overlaps(rect[b]), (a, b)


@pytest.mark.parametrize("name", ZOO + ["attention_block"])
def test_layers_follow_the_cut_dag(runs, name):
    _, ug, _ = runs[name]
    ab = abstraction.build(ug)
    for e in ab.edges:
        assert e.dst_layer > e.src_layer
    assert sum(len(n.layers) for n in ab.nodes.values()) == len(ug.cuts)


def _groups_with(ug, producer: str) -> str:
    (g,) = [g.id for g in ug.groups.values() if producer in g.producers]
    return g


def _edges(page: str) -> set[tuple[str, str, str]]:
    g = chart(page, GRAPH)
    return {(e.get("data-from"), e.get("data-to"), e.get("data-kind")) for e in g.iter(f"{NS}path")
            if e.get("class") == "edge"}  # fmt: skip


def test_resnet_residual_links(runs):
    """The group graph is cyclic (the branch writes back into its stage); the drawing has the
    write-back as a residual edge and the identity skip as a residual arc in the stage."""
    _, ug, page = runs["resnet_digits"]
    import networkx as nx

    assert not nx.is_directed_acyclic_graph(html.group_dag(ug))
    stage, branch = _groups_with(ug, "/layer1/conv2/Conv"), _groups_with(ug, "/layer1/conv1/Conv")
    edges = _edges(page)
    assert (stage, branch, "flow") in edges
    assert (branch, stage, "residual") in edges
    assert (stage, stage, "residual") in edges
    shortcut = _groups_with(ug, "/layer2/shortcut/shortcut.0/Conv")
    assert (stage, shortcut, "residual") in edges  # the projection shortcut


def test_mobile_squeeze_excite_and_residual_links(runs):
    _, ug, page = runs["mobile_digits"]
    edges = _edges(page)
    for block in ("blocks.0/block/block.3", "blocks.1/block/block.6"):
        squeeze = _groups_with(ug, f"/blocks/{block}/fc1/Conv")
        gated = _groups_with(ug, f"/blocks/{block}/fc2/Conv")
        assert (gated, squeeze, "flow") in edges
        assert (squeeze, gated, "gate") in edges
    assert any(k == "residual" for _, _, k in edges)


@pytest.mark.parametrize("name", ["cnn_digits", "mlp_digits", "equality_mlp"])
def test_chains_have_only_flow_edges_in_one_lane(runs, name):
    _, ug, page = runs[name]
    assert {k for _, _, k in _edges(page)} == {"flow"}
    ab = abstraction.build(ug)
    assert ab.lanes == 1 and ab.layers == len(ug.groups)


def test_transformer_units_are_named_heads_and_ffn_neurons(runs):
    report, ug, page = runs["attention_block"]
    kinds = {r["kind"] for r in report["groups"]}
    assert {"heads", "FFN neurons", "hidden dims"} <= kinds
    g = chart(page, GRAPH)
    labels = " ".join(t.text or "" for t in g.iter(f"{NS}text"))
    assert re.search(r"\d+/4 heads kept", labels) and re.search(r"\d+/32 FFN neurons kept", labels)
    heads = [r for r in report["groups"] if r["kind"] == "heads"]
    assert heads[0]["producers"] == ["q_proj", "k_proj", "v_proj"]


# --- charts --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO + ["attention_block"])
def test_every_text_inside_its_view_box(runs, name):
    _, _, page = runs[name]
    for s in svgs(page):
        vb = view_box(s)
        for t in s.iter(f"{NS}text"):
            b = box_of(t)
            if t.get("transform"):  # the rotated y label: its width runs along the height
                w = b.x1 - b.x0
                assert w <= vb.y1 - vb.y0 and float(t.get("x")) - 0.8 * 11 >= 0
                continue
            assert b.inside(vb), (_title(s), t.text, b, vb)


@pytest.mark.parametrize("name", ZOO + ["attention_block"])
def test_legends_clear_of_lines_and_markers(runs, name):
    _, _, page = runs[name]
    traj = chart(page, "Search trajectory")
    (leg,) = [g for g in traj.iter(f"{NS}g") if g.get("class") == "legend"]
    lb = box_of(leg)
    series = [g for g in traj.iter(f"{NS}g") if g.get("class") in ("series", "chosen")]
    assert series
    for g in series:
        for poly in g.iter(f"{NS}polyline"):
            pts = points(poly)
            assert not any(lb.hits_segment(a, b) for a, b in zip(pts, pts[1:], strict=False))
        for el in list(g.iter(f"{NS}circle")) + list(g.iter(f"{NS}line")):
            assert not lb.overlaps(box_of(el))
    for s in svgs(page):  # every legend below what it explains
        for g in s.iter(f"{NS}g"):
            if g.get("class") == "legend":
                assert box_of(g).inside(view_box(s))


@pytest.mark.parametrize("name", ZOO)
def test_trajectory_ends_at_the_chosen_plan_with_its_measured_risk(runs, name):
    report, _, page = runs[name]
    search = html.detail(report)["search"]
    xs, series, chosen, label = html.trajectory_points(report)
    assert chosen == len(xs) - 1 and xs[chosen] == search["kept"]
    assert series["measured risk"][chosen] == pytest.approx(search["risk"])
    assert f"{search['kept']} kept" in label and "risk" in label
    traj = chart(page, "Search trajectory")
    (mark,) = [g for g in traj.iter(f"{NS}g") if g.get("class") == "chosen"]
    assert len(mark.findall(f"{NS}circle")) == 3  # measured risk, fidelity, IIA
    risk = [g for g in traj.iter(f"{NS}g") if g.get("data-name") == "measured risk"][0]
    assert len(risk.findall(f"{NS}circle")) >= 2  # the start and the chosen plan at least


def test_rounds_without_risk_are_bridged_by_a_dashed_line(runs):
    report, _, page = runs["cnn_digits"]
    _, series, _, _ = html.trajectory_points(report)
    assert None in series["measured risk"]
    traj = chart(page, "Search trajectory")
    risk = [g for g in traj.iter(f"{NS}g") if g.get("data-name") == "measured risk"][0]
    assert any(p.get("class") == "bridge" for p in risk.iter(f"{NS}polyline"))
    assert "not measured in between" in ET.tostring(traj, encoding="unicode")


def test_frozen_table_or_a_sentence(runs):
    _, ug, page = runs["mobile_digits"]
    assert not ug.frozen()
    assert '<p class="empty">no frozen units</p>' in page and "<th>reason</th>" not in page
    _, ug, page = runs["resnet_digits"]
    assert ug.frozen() and "<th>reason</th>" in page and "no frozen units" not in page


def test_reports_of_either_shape_render_the_same_numbers(runs):
    """report["fidelity"] as the one number with the detail under "validation", or the older
    dict under "fidelity" (JSON reports written before): the same page."""
    report, ug, page = runs["mlp_digits"]
    doc = dict(report.to_dict() if hasattr(report, "to_dict") else report)
    det = dict(html.detail(doc))
    old = {k: v for k, v in doc.items() if k != "validation"} | {"fidelity": det}
    new = old | {"fidelity": det["agreement"], "validation": det}
    assert html.render_html(old, ug) == html.render_html(new, ug) == page


# --- primitives ----------------------------------------------------------------------------


def test_fit_shortens_around_an_ellipsis():
    s = "/blocks/blocks.1/block/block.6/fc2/Conv"
    short = svg.fit(s, 11, 80)
    assert svg.text_width(short, 11) <= 80 and "…" in short
    assert short.startswith("/bl") and short.endswith("v")
    assert svg.fit("fc1", 11, 80) == "fc1"


def test_box_segment_intersection():
    b = Box(0, 0, 10, 10)
    assert b.hits_segment((-5, 5), (15, 5)) and b.hits_segment((2, 2), (3, 3))
    assert not b.hits_segment((-5, -5), (15, -1)) and not b.hits_segment((11, 0), (20, 10))


def test_ticks_are_round_and_cover_the_range():
    assert svg.nice_ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1.0]
    assert svg.nice_ticks(112, 224, 6) == [125, 150, 175, 200]
    lo, hi, ticks = charts._range(0, 1.02)
    assert lo == 0 and hi >= 1.02 and ticks[-1] == hi
    assert [svg.fmt_power(t) for t in charts.log_ticks(-4.8, -1.9)] == ["10⁻⁴", "10⁻³", "10⁻²"]


def test_empty_charts_say_so():
    assert "no data" in charts.line_chart("t", [], {}, "x", "y")
    assert "no data" in charts.histogram("t", [0.0, -1.0], "score")
    assert "no layer groups" in charts.stacked_bars("t", [], {})
