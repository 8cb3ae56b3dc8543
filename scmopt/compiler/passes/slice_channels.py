"""Pass: slice removed units out of producers, channel-wise ops and layout ops.

Preserves: the values of every kept channel of every tensor. Each node's handler in the op
table (scmopt.ops) drops the removed channels from what it owns: producer weights and biases,
normalisation parameters, per-channel constants, depthwise weights, Split sizes, Reshape and
Resize targets, empty Concat inputs. Consumer *inputs* are left to `absorb_replacements`, which
must run afterwards on the same graph.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from scmopt.compiler.passes.channels import Survivors
from scmopt.ops.registry import lookup


def slice_channels(graph: gs.Graph, keep: Survivors) -> gs.Graph:
    for node in list(graph.nodes):
        if not node.outputs:
            continue
        handler = lookup(node.domain, node.op)
        if handler is not None:
            handler.slice(node, keep)
    return graph
