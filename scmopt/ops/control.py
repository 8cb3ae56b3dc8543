"""Control flow (If, Loop, Scan): bodies may read outer tensors; those channels are frozen."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from scmopt.ops.registry import Handler, register


def freeze_captured(node: gs.Node, ctx) -> None:
    """Freezes every labelled outer tensor read inside the node's subgraphs (recursively)."""
    for attr in node.attrs.values():
        subgraphs = attr if isinstance(attr, list) else [attr]
        for sub in subgraphs:
            if not isinstance(sub, gs.Graph):
                continue
            for inner in sub.nodes:
                for t in inner.inputs:
                    lay = ctx.lay(t)
                    if lay is not None:
                        ctx.freeze(lay.labels, f"read inside {node.op} '{node.name}'")
                freeze_captured(inner, ctx)


@register("If", "Loop", "Scan")
class ControlFlow(Handler):
    def propagate(self, node, ctx):
        freeze_captured(node, ctx)
        return "control flow (If/Loop/Scan bodies are not sliced)"
