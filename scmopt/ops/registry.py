"""The op table: one handler per op family, keyed by (domain, op type).

A handler answers everything scmopt needs to know about an op: how channel labels propagate
through it (or a refusal with a reason, which freezes the channels it touches), how to slice
its parameters when channels are removed, for linear consumers the weight view a cut exposes
and how a plan's replacement is absorbed, and its multiply-accumulates. Ops of other domains
and ops nobody registered freeze what they touch, with a reason; they never crash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from scmopt.compiler.passes.channels import Survivors
    from scmopt.units.layout import Layout

DEFAULT_DOMAINS = ("", "ai.onnx")


class Handler:
    """Base handler: an op that reads no labelled tensor in a way we understand."""

    linear = False  # reads cuts (Conv, Gemm, MatMul with constant weights)
    counts_macs = False  # the cost model counts this op's multiply-accumulates

    def propagate(self, node: gs.Node, ctx: Any) -> str | None:
        """Labels the node's outputs from its inputs' layouts; returns a refusal or None."""
        return "no handler"

    def slice(self, node: gs.Node, keep: Survivors) -> None:
        """Drops the removed channels from the node's parameters (default: nothing to do)."""

    def weight_view(self, node: gs.Node, layout: Layout) -> np.ndarray:
        """Consumer weights on a cut as [C, block, R] float64 (linear handlers only)."""
        raise NotImplementedError(f"{node.op} is not a linear consumer")

    def absorb(self, graph: gs.Graph, node: gs.Node, layout: Layout, spatial, m_rows, b,
               mask: np.ndarray) -> None:  # fmt: skip
        """Folds the plan's replacement of the node's cut into the node (linear handlers)."""
        raise NotImplementedError(f"{node.op} is not a linear consumer")

    def macs(self, node, shapes: dict) -> int | None:
        """Multiply-accumulates of one sample for an onnx NodeProto and tensor shapes (None:
        unknown; 0 for ops the cost model does not count). Formulas live in ops/macs.py."""
        return 0


class OnLabelled(Handler):
    """A handler with nothing to do unless its first input is labelled: `follow` gets that
    input's layout."""

    def propagate(self, node: gs.Node, ctx: Any) -> str | None:
        lay = ctx.lay(node.inputs[0])
        return None if lay is None else self.follow(node, ctx, lay)

    def follow(self, node: gs.Node, ctx: Any, lay: Layout) -> str | None:
        raise NotImplementedError


REGISTRY: dict[tuple[str, str], Handler] = {}


def register(*ops: str, domain: str = ""):
    """Class decorator: one instance of the handler serves every op type listed."""

    def deco(cls: type[Handler]) -> type[Handler]:
        inst = cls()
        for op in ops:
            REGISTRY[(domain, op)] = inst
        return cls

    return deco


def lookup(domain: str | None, op: str) -> Handler | None:
    """The handler of an op, or None (unregistered op or foreign domain)."""
    _load_families()
    d = "" if domain in (None, *DEFAULT_DOMAINS) else domain
    return REGISTRY.get((d, op))


_LOADED = False


def _load_families() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from scmopt.ops import (  # noqa: F401  (registering modules)
        control,
        conv,
        dense,
        elementwise,
        layout,
        norm,
        pooling,
    )
