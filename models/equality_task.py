"""Hierarchical equality task (Geiger et al.), numpy only.

An input is four entity vectors a, b, c, d (each ``ENTITY_DIM`` floats) drawn from a fixed
vocabulary of ``N_ENTITIES`` random vectors, concatenated into one row of ``4 * ENTITY_DIM``.
The label is ``(a == b) == (c == d)``.

High-level causal model (the abstraction the trained network is checked against)::

    v1 = (a == b)        v2 = (c == d)        y = (v1 == v2)

Each pair is made equal with probability 1/2, independently, so P(y = 1) = 1/2 and all four
(v1, v2) combinations are equally likely.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "ENTITY_DIM",
    "N_ENTITIES",
    "INPUT_DIM",
    "VARIABLES",
    "entities",
    "sample",
    "split_entities",
    "high_level_vars",
    "high_level_output",
    "counterfactual",
]

ENTITY_DIM = 4
N_ENTITIES = 100
INPUT_DIM = 4 * ENTITY_DIM
VARIABLES = ("v1", "v2")
ENTITY_SEED = 1234
P_EQUAL = 0.5  # (q^2 + (1-q)^2 = 1/2 at q = 1/2: balanced labels)
_ATOL = 1e-6


def entities(seed: int = ENTITY_SEED) -> np.ndarray:
    """The fixed vocabulary: ``N_ENTITIES`` x ``ENTITY_DIM`` float32 vectors, uniform in [-1, 1]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(N_ENTITIES, ENTITY_DIM)).astype(np.float32)


def _pair(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j): i == j with probability ``P_EQUAL``, else j uniform over j != i."""
    i = rng.integers(0, N_ENTITIES, size=n)
    equal = rng.random(n) < P_EQUAL
    offset = rng.integers(1, N_ENTITIES, size=n)  # j = i + offset mod N is never i
    j = np.where(equal, i, (i + offset) % N_ENTITIES)
    return i, j


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw n examples: ``x`` float32 [n, 16] = concat(a, b, c, d), ``y`` int64 [n] in {0, 1}."""
    rng = np.random.default_rng(seed)
    vocab = entities()
    ia, ib = _pair(rng, n)
    ic, id_ = _pair(rng, n)
    x = np.concatenate([vocab[ia], vocab[ib], vocab[ic], vocab[id_]], axis=1)
    y = high_level_output(ia == ib, ic == id_)
    return np.ascontiguousarray(x, dtype=np.float32), y


def split_entities(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split rows of x [n, 16] into the four entity vectors a, b, c, d (each [n, 4])."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != INPUT_DIM:
        raise ValueError(f"expected x of shape [n, {INPUT_DIM}], got {x.shape}")
    a, b, c, d = np.split(x, 4, axis=1)
    return a, b, c, d


def _same(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.all(np.isclose(u, v, rtol=0.0, atol=_ATOL), axis=1)


def high_level_vars(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The intermediate variables of the high-level model: v1 = (a == b), v2 = (c == d)."""
    a, b, c, d = split_entities(x)
    return _same(a, b), _same(c, d)


def high_level_output(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """The label y = (v1 == v2) as int64."""
    return (np.asarray(v1, dtype=bool) == np.asarray(v2, dtype=bool)).astype(np.int64)


def counterfactual(
    base_x: np.ndarray, source_x: np.ndarray, variables: str | Iterable[str]
) -> np.ndarray:
    """High-level label of base_x when the named variables take their values from source_x.

    ``variables`` is "v1", "v2", or any collection of them (empty: the base label). base_x and
    source_x are paired row by row (same shape [n, 16]). This is the expected output of an
    interchange intervention that swaps the network's representation of those variables.
    """
    names = {variables} if isinstance(variables, str) else set(variables)
    unknown = names - set(VARIABLES)
    if unknown:
        raise ValueError(f"unknown high-level variables {sorted(unknown)}; known: {VARIABLES}")
    base_x, source_x = np.asarray(base_x), np.asarray(source_x)
    if base_x.shape != source_x.shape:
        raise ValueError(f"base and source shapes differ: {base_x.shape} vs {source_x.shape}")
    v1, v2 = high_level_vars(base_x)
    s1, s2 = high_level_vars(source_x)
    if "v1" in names:
        v1 = s1
    if "v2" in names:
        v2 = s2
    return high_level_output(v1, v2)
