"""The abstraction graph (the report's causal map): one node per unit group, what survives of
it, and how the groups feed each other, for every model.

Groups are not a DAG in general: a residual stage is one group (the Add unifies its channels),
and the branch it feeds writes back into it, so the group graph has a cycle per residual or
squeeze-excite block. The cuts are a DAG: cut a feeds cut b when b is reached from a through
the model without passing another cut. Layers (top to bottom) are the topological generations
of that DAG (networkx); a group spans the layers of its first to its last cut, and groups
whose spans overlap go side by side in lanes. An edge is a `residual` when the path from a to
b joins another branch in an Add (Sum, Sub; the branch labelled, or an unlabelled stream of the
same size: not a broadcast mask), a `gate` when it is the small operand of a Mul or
Div that scales another branch (squeeze-excite), `concat` when it joins one in a Concat, else
`flow`. Edges inside one group (the identity skip of a residual stream) are drawn as arcs
beside its box.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

from scmopt.report.svg import COLORS, LegendItem, esc, fit, frame, legend, text
from scmopt.units.analysis import Group, UnitGraph

MERGES = {"Add": "residual", "Sum": "residual", "Sub": "residual", "Mul": "gate",
          "Div": "gate", "Concat": "concat"}  # fmt: skip
PRIORITY = ("residual", "gate", "concat", "flow")
EDGE_STYLE = {  # kind -> (colour, dash, legend text)
    "flow": ("#888", "", "feeds"),
    "residual": (COLORS[3], "6 3", "joins a residual sum"),
    "gate": (COLORS[4], "2 3", "gates another branch (squeeze-excite)"),
    "concat": (COLORS[0], "", "joins a concat"),
}
LANE, NW, NH, LAYER, TOP, SIDE, ARC = 224, 184, 34, 56, 36, 14, 30


@dataclass
class Edge:
    src: str  # group ids
    dst: str
    src_layer: int
    dst_layer: int
    kind: str
    cuts: tuple[str, str]


@dataclass
class Node:
    group: str
    kind: str  # what its units are: heads, FFN neurons, channels, neurons, hidden dims, units
    start: int  # first and last layer
    end: int
    lane: int = 0
    layers: dict[str, int] = field(default_factory=dict)  # cut tensor -> layer


@dataclass
class Abstraction:
    nodes: dict[str, Node]
    edges: list[Edge]
    layers: int
    lanes: int


def _sizes(ug: UnitGraph) -> dict[str, int]:
    """Values per sample of the tensors with a static shape."""
    out = {}
    for vi in list(ug.model.graph.value_info) + list(ug.model.graph.input):
        dims = vi.type.tensor_type.shape.dim[1:]
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = math.prod(d.dim_value for d in dims)
    return out


def cut_edges(ug: UnitGraph) -> dict[tuple[str, str], str]:
    """(cut a, cut b) -> edge kind, for every cut b reached from a without passing a cut,
    except where the path to b forks off the path to another cut c that reaches b itself
    (a pre-LN residual stream reaches every later layer; its first LayerNorm stands for it)."""
    graph = ug.model.graph
    init = {t.name for t in graph.initializer}
    size = _sizes(ug)
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                readers.setdefault(i, []).append(n)
    order = {n.name: k for k, n in enumerate(graph.node)}
    cuts = set(ug.cuts)
    edges: dict[tuple[str, str], str] = {}
    via: dict[tuple[str, str], set[str]] = {}  # tensors inside a's region on the way to b
    for c in ug.cuts:
        region, stack, nodes = {c}, [c], {}
        while stack:
            for n in readers.get(stack.pop(), []):
                nodes[n.name] = n
                for o in n.output:
                    if o and o not in region and o not in cuts:
                        region.add(o)
                        stack.append(o)
        kinds: dict[str, frozenset[str]] = {c: frozenset()}
        anc: dict[str, frozenset[str]] = {c: frozenset()}
        for n in sorted(nodes.values(), key=lambda n: order[n.name]):
            mine = [i for i in n.input if i in region]
            ks = set().union(*(kinds.get(i, ()) for i in mine))
            up = frozenset().union(*(anc.get(i, ()) for i in mine), set(mine) - {c})
            other = [i for i in n.input if i and i not in region and i not in init]
            joined = [i for i in other if i in ug.layouts]
            if MERGES.get(n.op_type) == "residual":  # an unlabelled stream of the same size too
                same = {size.get(i) for i in mine} - {None}
                joined += [i for i in other if i not in joined and size.get(i) in same]
            kind = MERGES.get(n.op_type) if joined else None
            if kind == "gate" and all(i in size for i in mine + joined):
                # the smaller (broadcast) operand gates; the other is the path being gated
                if min(size[i] for i in mine) >= max(size[i] for i in joined):
                    kind = None
            if kind:
                ks.add(kind)
            for o in n.output:
                if o in cuts and o != c:
                    old = edges.get((c, o), "flow")
                    new = next((k for k in PRIORITY if k in ks), "flow")
                    edges[(c, o)] = min(old, new, key=PRIORITY.index)
                    via.setdefault((c, o), set()).update(up)
                elif o in region:
                    kinds[o] = frozenset(ks) | kinds.get(o, frozenset())
                    anc[o] = up | anc.get(o, frozenset())
    dag = nx.DiGraph(list(edges))
    targets: dict[str, list[str]] = {}
    for a, b in edges:
        targets.setdefault(a, []).append(b)
    for a, bs in targets.items():
        for b in bs:
            if any(o != b and via[(a, b)] & via[(a, o)] and nx.has_path(dag, o, b) for o in bs):
                del edges[(a, b)]
    return edges


def unit_kind(ug: UnitGraph, g: Group, ops: dict[str, str]) -> str:
    """What a group's units are, where the cuts tell: a cut with blocks of channels (rank >= 3)
    read by a MatMul carries attention heads; a [B, T, D] cut read by a MatMul FFN neurons
    (the hidden dims of the residual stream when every unit is frozen)."""
    cuts = [ug.cuts[c] for c in g.cuts if c in ug.cuts]

    def reads(cut) -> set[str]:
        return {ops.get(n, "") for n in cut.consumers}

    if any(c.block > 1 and (c.rank or 0) >= 3 and "MatMul" in reads(c) for c in cuts):
        return "heads"
    if {ops.get(p) for p in g.producers} & {"Conv", "ConvTranspose"}:
        return "channels"
    if any(c.rank == 3 and "MatMul" in reads(c) for c in cuts):
        return "FFN neurons" if any(ug.units[u].prunable for u in g.units) else "hidden dims"
    if any((c.rank or 0) >= 3 for c in cuts):
        return "channels"
    if any(c.rank == 2 for c in cuts):
        frozen = all(not ug.units[u].prunable for u in g.units)
        return "features" if frozen and not g.producers else "neurons"
    return "units"


def build(ug: UnitGraph) -> Abstraction:
    """Layers, lanes and edges of the graph (see the module docstring)."""
    edges = cut_edges(ug)
    dag = nx.DiGraph()
    dag.add_nodes_from(ug.cuts)
    dag.add_edges_from(edges)
    layer = {c: i for i, gen in enumerate(nx.topological_generations(dag)) for c in sorted(gen)}
    ops = {n.name: n.op_type for n in ug.model.graph.node}
    group_of = {c: ug.units[cut.units[0]].group for c, cut in ug.cuts.items() if cut.units}
    nodes: dict[str, Node] = {}
    for g in ug.groups.values():
        at = {c: layer[c] for c in g.cuts if c in layer}
        span = list(at.values()) or [0]
        nodes[g.id] = Node(g.id, unit_kind(ug, g, ops), min(span), max(span), 0, at)
    ends: list[int] = []  # last layer taken in each lane
    for n in sorted(nodes.values(), key=lambda n: (n.start, n.end, n.group)):
        free = [r for r, e in enumerate(ends) if e < n.start]
        n.lane = free[0] if free else len(ends)
        ends[n.lane : n.lane + 1] = [n.end]
    out = [
        Edge(group_of[a], group_of[b], layer[a], layer[b], kind, (a, b))
        for (a, b), kind in sorted(
            edges.items(), key=lambda e: (layer[e[0][0]], layer[e[0][1]], e[0])
        )
        if a in group_of and b in group_of
    ]
    return Abstraction(nodes, out, max(layer.values(), default=0) + 1, max(len(ends), 1))


def short_name(node: str) -> str:
    """A readable producer name: '/blocks/blocks.2/block/block.0/Conv' -> 'blocks.2/block.0'."""
    parts = [p for p in node.strip("/").split("/") if p]
    if len(parts) > 1 and parts[-1][:1].isupper():
        parts = parts[:-1]  # the op type torch appends
    kept = [p for i, p in enumerate(parts) if i + 1 == len(parts) or not parts[i + 1].startswith(p)]
    return "/".join(kept) or node


def producers_text(producers: Iterable[str], cuts: Iterable[str] = ()) -> str:
    """The first producer and how many more; for units no layer produces (channels of an op
    that cannot be sliced, like a LayerNormalization) the cut where they are."""
    ps = list(producers)
    if not ps:
        cs = list(cuts)
        return f"at {short_name(cs[0])}" if cs else "no producer"
    return short_name(ps[0]) + (f" +{len(ps) - 1}" if len(ps) > 1 else "")


def _x0(lane: int) -> float:
    return SIDE + lane * LANE


def _cy(layer: int) -> float:
    return TOP + NH / 2 + layer * LAYER


def _path(ab: Abstraction, e: Edge, occupied: dict[int, set[int]]) -> str:
    """Same lane, adjacent and nothing between: a straight line down; same lane otherwise
    (skips, edges inside a group): an arc right of the lane; across lanes: an S-curve from the
    source's bottom (or side, when the source continues below) to the target's top (or side,
    when the target starts above)."""
    s, d = ab.nodes[e.src], ab.nodes[e.dst]
    sx0, dx0 = _x0(s.lane), _x0(d.lane)
    ya, yb = _cy(e.src_layer), _cy(e.dst_layer)
    if s.lane == d.lane:
        between = set(range(e.src_layer + 1, e.dst_layer)) & occupied[s.lane]
        if e.src != e.dst and s.end == e.src_layer and d.start == e.dst_layer and not between:
            x = sx0 + NW / 2
            return f"M{x:.1f},{ya + NH / 2:.1f} L{x:.1f},{yb - NH / 2 - 2:.1f}"
        x, r = sx0 + NW, sx0 + NW + ARC
        return (f"M{x:.1f},{ya + 4:.1f} C{r:.1f},{ya + 14:.1f} {r:.1f},{yb - 14:.1f} "
                f"{x + 2:.1f},{yb - 4:.1f}")  # fmt: skip
    right = d.lane > s.lane
    if s.end == e.src_layer:
        p = (sx0 + NW / 2 + (20 if right else -20), ya + NH / 2)
        c1 = (p[0], p[1] + 24)
    else:
        p = (sx0 + NW, ya) if right else (sx0, ya)
        c1 = (p[0] + (30 if right else -30), p[1])
    if d.start == e.dst_layer:
        q = (dx0 + NW / 2 + (-20 if right else 20), yb - NH / 2 - 2)
        c2 = (q[0], q[1] - 24)
    else:
        q = (dx0 - 2, yb) if right else (dx0 + NW + 2, yb)
        c2 = (q[0] + (-30 if right else 30), q[1])
    return (f"M{p[0]:.1f},{p[1]:.1f} C{c1[0]:.1f},{c1[1]:.1f} {c2[0]:.1f},{c2[1]:.1f} "
            f"{q[0]:.1f},{q[1]:.1f}")  # fmt: skip


def draw(ab: Abstraction, rows: dict[str, dict], title: str) -> str:
    """The graph as SVG. `rows`: the report's group rows by id (units, kept, folded, constant,
    frozen, producers). Nodes are <g class="node" data-group=...>, edges <path class="edge"
    data-from data-to data-kind>."""
    width = 2 * SIDE + (ab.lanes - 1) * LANE + NW + ARC
    occupied: dict[int, set[int]] = {r: set() for r in range(ab.lanes)}
    for n in ab.nodes.values():
        occupied[n.lane] |= set(range(n.start, n.end + 1))
    defs = "".join(
        f'<marker id="arrow-{k}" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" '
        f'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="{c}"/></marker>'
        for k, (c, _, _) in EDGE_STYLE.items()
    )
    body = [f"<defs>{defs}</defs>"]
    for n in sorted(ab.nodes.values(), key=lambda n: n.group):
        body.append(_node(n, rows.get(n.group, {})))
    for e in ab.edges:
        color, dash, what = EDGE_STYLE[e.kind]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        body.append(
            f'<path class="edge" data-from="{e.src}" data-to="{e.dst}" data-kind="{e.kind}" '
            f'd="{_path(ab, e, occupied)}" fill="none" stroke="{color}" stroke-width="1.5"'
            f'{dash_attr} marker-end="url(#arrow-{e.kind})"><title>{esc(e.src)} → {esc(e.dst)}: '
            f"{what} ({esc(e.cuts[0])} → {esc(e.cuts[1])})</title></path>"
        )
    kinds = [k for k in EDGE_STYLE if any(e.kind == k for e in ab.edges)]
    items = [LegendItem("kept", COLORS[2], "box"), LegendItem("frozen", "#aaa", "box"),
             LegendItem("removed (constant or folded)", "#e4e4e4", "box")]  # fmt: skip
    for k in kinds:
        color, dash, what = EDGE_STYLE[k]
        items.append(LegendItem(what, color, "dash" if dash else "plain", dash))
    y = _cy(ab.layers - 1) + NH / 2 + 14
    leg, box = legend(items, SIDE, y, max(width - 2 * SIDE, 560))
    body.append(leg)
    return frame(title, "".join(body), max(width, box.x1 + SIDE), box.y1 + 6, kind="graph")


def _node(n: Node, row: dict) -> str:
    x0, y0, y1 = _x0(n.lane), _cy(n.start) - NH / 2, _cy(n.end) + NH / 2
    h = y1 - y0
    units = max(int(row.get("units", 0)), 1)
    frozen = int(row.get("frozen", 0))
    kept = int(row.get("kept", 0))
    wk, wf = NW * (kept - frozen) / units, NW * frozen / units
    label = f"{n.group} · {kept}/{row.get('units', 0)} {n.kind} kept"
    prod = producers_text(row.get("producers", []), n.layers)
    tip = (f"{n.group}: {kept} of {row.get('units', 0)} {n.kind} kept ({row.get('folded', 0)} "
           f"folded, {row.get('constant', 0)} constant, {frozen} frozen); producers: "
           f"{', '.join(row.get('producers', [])) or 'none (graph input)'}; cuts: "
           f"{', '.join(n.layers)}")  # fmt: skip
    parts = [
        f"<title>{esc(tip)}</title>",
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{NW}" height="{h:.1f}" rx="4" fill="#e4e4e4"/>',
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{wk:.1f}" height="{h:.1f}" fill="{COLORS[2]}" '
        'opacity="0.55"/>',
        f'<rect x="{x0 + wk:.1f}" y="{y0:.1f}" width="{wf:.1f}" height="{h:.1f}" fill="#aaa"/>',
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{NW}" height="{h:.1f}" rx="4" fill="none" '
        'stroke="#555"/>',
        text(x0 + 6, y0 + 14, fit(label, 10.7, NW - 12), 10, font_weight="bold"),
        text(x0 + 6, y0 + 27, fit(prod, 10, NW - 12), 10),
    ]
    for cut, layer in n.layers.items() if len(n.layers) > 1 else ():
        parts.append(
            f'<circle class="port" cx="{x0 + NW:.1f}" cy="{_cy(layer):.1f}" r="2.5" fill="#555">'
            f"<title>cut {esc(cut)}</title></circle>"
        )
    return f'<g class="node" data-group="{esc(n.group)}">' + "".join(parts) + "</g>"
