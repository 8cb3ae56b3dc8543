"""Hierarchical majority task for the ``text_encoder`` zoo model, numpy only.

A sequence is ``[CLS] segment1 [SEP] segment2 [SEP]`` followed by ``[PAD]`` up to ``SEQ_LEN``
tokens. Each segment holds ``SEG_MIN``..``SEG_MAX`` tokens: an odd number (1, 3, 5 or 7) of
*marked* tokens, each ``A`` or ``B``, at random positions, the rest *distractors* (tokens that
never matter). The attention mask is 1 on real tokens and 0 on padding.

High-level causal model (the abstraction the trained network is checked against)::

    v1 = (#A > #B in segment 1)      v2 = (#A > #B in segment 2)      y = (v1 == v2)

An odd number of marked tokens per segment means no ties. v1 and v2 are each true with
probability 1/2, independently, so the labels are balanced and all four (v1, v2) combinations are
equally likely. The network has to find the segment boundary (the first ``SEP``: segment lengths
vary), count marked tokens on each side, and compare the two majorities.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "PAD",
    "CLS",
    "SEP",
    "A",
    "B",
    "DISTRACTORS",
    "VOCAB_SIZE",
    "SEQ_LEN",
    "INPUT_NAMES",
    "VARIABLES",
    "sample",
    "segments",
    "high_level_vars",
    "high_level_output",
    "counterfactual",
]

PAD, CLS, SEP, A, B = 0, 1, 2, 3, 4
N_DISTRACTORS = 8
DISTRACTORS = tuple(range(5, 5 + N_DISTRACTORS))
VOCAB_SIZE = 5 + N_DISTRACTORS
SEG_MIN, SEG_MAX = 3, 10
MARKED = (1, 3, 5, 7)  # marked tokens per segment (odd: no ties), at most the segment length
SEQ_LEN = 1 + SEG_MAX + 1 + SEG_MAX + 1 + 1  # 24: the longest sequence plus at least one PAD
INPUT_NAMES = ("input_ids", "attention_mask")
VARIABLES = ("v1", "v2")


def _segment(rng: np.random.Generator, majority_a: bool) -> list[int]:
    length = int(rng.integers(SEG_MIN, SEG_MAX + 1))
    m = int(rng.choice([k for k in MARKED if k <= length]))
    n_major = int(rng.integers((m + 1) // 2, m + 1))  # the majority's count, > m / 2
    major, minor = (A, B) if majority_a else (B, A)
    marked = [major] * n_major + [minor] * (m - n_major)
    tokens = np.array(marked + [int(t) for t in rng.choice(DISTRACTORS, size=length - m)])
    return [int(t) for t in rng.permutation(tokens)]


def sample(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw n examples: ({"input_ids", "attention_mask"} int64 [n, SEQ_LEN], y int64 [n])."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, SEQ_LEN), PAD, dtype=np.int64)
    v = rng.random((n, 2)) < 0.5
    for i in range(n):
        seq = [CLS, *_segment(rng, bool(v[i, 0])), SEP, *_segment(rng, bool(v[i, 1])), SEP]
        ids[i, : len(seq)] = seq
    mask = (ids != PAD).astype(np.int64)
    y = high_level_output(v[:, 0], v[:, 1])
    return {"input_ids": ids, "attention_mask": mask}, y


def _ids(x) -> np.ndarray:
    ids = np.asarray(x["input_ids"] if isinstance(x, dict) else x)
    if ids.ndim != 2:
        raise ValueError(f"expected input_ids of shape [n, T], got {ids.shape}")
    return ids


def segments(x) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks [n, T] of the positions in segment 1 and in segment 2.

    ``x`` is the input dict or the ``input_ids`` array. Segment 1 lies between CLS (position 0)
    and the first SEP, segment 2 between the first and the second SEP.
    """
    ids = _ids(x)
    n_sep = np.cumsum(ids == SEP, axis=1)
    real = (ids != PAD) & (ids != CLS) & (ids != SEP)
    return real & (n_sep == 0), real & (n_sep == 1)


def high_level_vars(x) -> tuple[np.ndarray, np.ndarray]:
    """The intermediate variables: v1, v2 = (#A > #B) in segment 1, in segment 2."""
    ids = _ids(x)
    out = []
    for seg in segments(ids):
        out.append(((ids == A) & seg).sum(axis=1) > ((ids == B) & seg).sum(axis=1))
    return out[0], out[1]


def high_level_output(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """The label y = (v1 == v2) as int64."""
    return (np.asarray(v1, dtype=bool) == np.asarray(v2, dtype=bool)).astype(np.int64)


def counterfactual(base_x, source_x, variables: str | Iterable[str]) -> np.ndarray:
    """High-level label of base_x when the named variables take their values from source_x.

    ``variables`` is "v1", "v2", or any collection of them (empty: the base label); base and
    source rows are paired. This is the expected output of an interchange intervention that
    swaps the network's representation of those variables.
    """
    names = {variables} if isinstance(variables, str) else set(variables)
    unknown = names - set(VARIABLES)
    if unknown:
        raise ValueError(f"unknown high-level variables {sorted(unknown)}; known: {VARIABLES}")
    if _ids(base_x).shape[0] != _ids(source_x).shape[0]:
        raise ValueError("base and source hold different numbers of rows")
    v1, v2 = high_level_vars(base_x)
    s1, s2 = high_level_vars(source_x)
    if "v1" in names:
        v1 = s1
    if "v2" in names:
        v2 = s2
    return high_level_output(v1, v2)
