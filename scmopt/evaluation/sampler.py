"""The one seeded sampler of interchange interventions (DESIGN §2).

For a split of n samples, `InterventionSampler(n, p, seed)` fixes, once and for the whole
split:

- for every base i a source j != i, uniform over the split (`sources`);
- for every cut, an n x C Bernoulli(p) draw per sample and channel (`mask(cut, kept)`: the draw
  restricted to the kept units, since removed units are never intervened on);
- for the statistics' upstream passes, one site per sample and a subset of samples
  (`sites`, `subset`).

Guarantees: every draw is a pure function of (n, p, seed) and, for masks, of the cut's name
and channel count; it does not depend on how the split is later cut into batches, on which
other cuts exist, or on the order in which draws are asked for. Batches only select rows of
these arrays (`rows=`), so the batch size is a memory knob that changes no number.
"""

from __future__ import annotations

import zlib
from functools import cached_property

import numpy as np

Rows = slice | np.ndarray

_TAG = 0x5CA1  # separates the sampler's streams from other seeded draws of the same seed


class InterventionSampler:
    """Seeded interchange draws over a whole split of `n` samples (see the module docstring)."""

    def __init__(self, n: int, p: float, seed: int) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        if not 0 <= p <= 1:
            raise ValueError(f"swap probability p must be in [0, 1], not {p}")
        self.n = int(n)
        self.p = float(p)
        self.seed = int(seed)
        self._draws: dict[tuple[str, int], np.ndarray] = {}

    def _rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _TAG, *stream])

    @cached_property
    def sources(self) -> np.ndarray:
        """[n] int64: the source of each base, uniform over the other samples (itself when
        n == 1: the interchange is then a no-op)."""
        n = self.n
        if n < 2:
            return np.zeros(n, np.int64)
        shift = self._rng(0).integers(1, n, size=n)
        return ((np.arange(n) + shift) % n).astype(np.int64)

    def draw(self, cut: str, channels: int) -> np.ndarray:
        """[n, channels] bool: Bernoulli(p) per sample and channel of `cut`, before the kept
        units are applied. Seeded by the cut's name, so it is the same whatever other cuts a
        model has."""
        key = (cut, int(channels))
        if key not in self._draws:
            rng = self._rng(1, zlib.crc32(cut.encode()), int(channels))
            self._draws[key] = rng.random((self.n, int(channels))) < self.p
        return self._draws[key]

    def mask(self, cut: str, kept: np.ndarray, rows: Rows = slice(None)) -> np.ndarray:
        """[rows, C] bool swap mask at `cut`: the draw AND the kept units (`kept`: [C] bool,
        the channels of units the plan keeps)."""
        kept = np.asarray(kept, dtype=bool)
        return self.draw(cut, len(kept))[rows] & kept[None, :]

    def sites(self, count: int) -> np.ndarray:
        """[n] int64: one site index in [0, count) per sample, uniform (statistics under
        upstream swaps intervene on one random site per sample)."""
        if count < 1:
            return np.zeros(self.n, np.int64)
        return self._rng(2, int(count)).integers(0, count, size=self.n).astype(np.int64)

    def subset(self, fraction: float) -> np.ndarray:
        """[n] bool: round(fraction * n) samples chosen uniformly without replacement."""
        k = int(round(min(max(fraction, 0.0), 1.0) * self.n))
        chosen = np.zeros(self.n, dtype=bool)
        chosen[self._rng(3).choice(self.n, size=k, replace=False)] = True
        return chosen
