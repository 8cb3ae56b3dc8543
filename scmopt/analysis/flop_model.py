"""FLOPs of one sample as a function of the units a plan removes, without compiling it.

Each linear node's multiply-accumulates (ops.cost, one sample) scale with the kept fraction of
every distinct set of units its operands carry: a Conv from cut A to cut B costs m0 * k_A * k_B
(removing channels of both sides is bilinear), an FFN projection m0 * k_F, QK^T and the
attention-weighted sum m0 * k_heads (q, k and the scores carry the same heads: one factor, not
three). k is the kept share of the factor's channels. Removing unit u of factor f saves
m0 * (channels of u / channels of f) * prod_{g != f} k_g at that node. Exact where a unit's
channels cost the same as any other's of its factor (all the linear ops scmopt slices); what
compile adds for exactness (border maps of constant conv channels) is not modelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from scmopt.units.analysis import UnitGraph

# one factor: unit -> its channels in the operand, and the operand's channel count
Factor = tuple[dict[str, int], int]


class FlopModel:
    def __init__(self, ug: UnitGraph, node_macs: Mapping[str, int | None]) -> None:
        prunable = set(ug.prunable)
        self.terms: list[tuple[float, list[Factor]]] = []
        self.base = 0.0
        for node in ug.model.graph.node:
            m = node_macs.get(node.name or node.output[0])
            if not m:
                continue
            self.base += 2.0 * m
            factors: dict[frozenset, Factor] = {}
            for name in (*node.input, *node.output):
                lay = ug.layouts.get(name) if name else None
                if lay is None:
                    continue
                counts = Counter(str(v) for v in lay.labels)
                if not prunable.intersection(counts):
                    continue  # a frozen operand: always whole
                factors.setdefault(frozenset(counts), (dict(counts), lay.channels))
            if factors:
                self.terms.append((2.0 * m, list(factors.values())))

    @staticmethod
    def _kept(f: Factor, removed: set[str]) -> float:
        counts, total = f
        return 1.0 - sum(n for u, n in counts.items() if u in removed) / total

    def flops(self, removed: Iterable[str]) -> float:
        """Modelled FLOPs of one sample with `removed` gone."""
        gone = set(removed)
        out = self.base
        for m, factors in self.terms:
            prod = 1.0
            for f in factors:
                prod *= self._kept(f, gone)
            out -= m * (1.0 - prod)
        return out

    def savings(self, removed: Iterable[str]) -> dict[str, float]:
        """FLOPs one more removal saves, per unit not yet removed (first order: units removed
        together in one round are credited as if each went alone)."""
        gone = set(removed)
        out: dict[str, float] = {}
        for m, factors in self.terms:
            kept = [self._kept(f, gone) for f in factors]
            for i, (counts, total) in enumerate(factors):
                rest = m
                for j, k in enumerate(kept):
                    if j != i:
                        rest *= k
                for u, n in counts.items():
                    if u not in gone:
                        out[u] = out.get(u, 0.0) + rest * n / total
        return out
