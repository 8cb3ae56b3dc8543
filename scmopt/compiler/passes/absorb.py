"""Pass: absorb the plan's replacements into the linear consumers of each cut.

A consumer computes W x with x the cut; the plan replaces x by M x + B (scmopt.plan). So the
consumer becomes (W M) x + W B: weights mixed by M (folds), the constant W B added to the bias,
and the columns of removed units, zero in W M, dropped. Each consumer's handler (scmopt.ops)
does it on its own weight layout, touching only the removed rows of M.

Preserves: the consumer's output equals its output on the plan's simulation, exactly.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from scmopt.compiler.passes.channels import Survivors
from scmopt.ops.registry import lookup
from scmopt.plan import Plan


def absorb_replacements(graph: gs.Graph, keep: Survivors, plan: Plan) -> gs.Graph:
    """Rewrites every consumer of every touched cut."""
    nodes = {n.name: n for n in graph.nodes}
    for cut in keep.ug.cuts.values():
        if not plan.touches(cut):
            continue
        rows, b = plan.cut_rows(cut)
        mask = keep.channels(cut.tensor)
        for name in cut.consumers:
            node = nodes[name]
            lookup(node.domain, node.op).absorb(graph, node, cut.layout, cut.spatial, rows, b, mask)
    return graph
