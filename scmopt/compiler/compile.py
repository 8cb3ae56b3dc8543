"""compile(plan): the canonical model rewritten into the smaller model the plan describes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from scmopt.compiler.passes.absorb import absorb_replacements
from scmopt.compiler.passes.channels import Survivors
from scmopt.compiler.passes.slice_channels import slice_channels
from scmopt.io.graph import opset
from scmopt.plan import Plan
from scmopt.units.analysis import UnitGraph


@dataclass
class Compiled:
    model: onnx.ModelProto
    kept_positions: dict[str, np.ndarray] = field(default_factory=dict)  # cut -> old indices


def compile_plan(ug: UnitGraph, plan: Plan) -> Compiled:
    """Slices the removed units and absorbs their replacements; see scmopt.passes. The result
    keeps the graph's inputs and outputs (names, types, dims) and no intermediate value_info."""
    plan.validate(ug)
    src = ug.model
    graph = gs.import_onnx(copy.deepcopy(src))
    keep = Survivors(ug, plan.removed, opset(src), graph)
    slice_channels(graph, keep)
    absorb_replacements(graph, keep, plan)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version",
              "doc_string"):  # fmt: skip
        setattr(out, f, getattr(src, f))
    del out.opset_import[:]
    out.opset_import.extend(src.opset_import)
    del out.metadata_props[:]
    out.metadata_props.extend(src.metadata_props)
    # The artifact carries no inferred intermediate shapes (the export's own value_info goes
    # with them): onnxruntime ran transformer graphs 19-34% slower with them (vit_digits,
    # text_encoder, batch 32, 1 thread; CNNs unchanged). Whoever needs shapes infers them.
    del out.graph.value_info[:]
    kept = {t: np.flatnonzero(keep.channels(t)) for t in ug.cuts}
    return Compiled(out, kept)
