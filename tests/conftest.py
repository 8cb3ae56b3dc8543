"""Shared fixtures: the repo root and tests/ on sys.path, zoo loaders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


@pytest.fixture(scope="module")
def block():
    """Two BERT-style layers (8 heads) with 96 random samples and a padding-like mask: a
    search runs on it in about a second."""
    import numpy as np
    from graphs import attention_block, sample

    from scmopt import units

    ug = units.analyze(attention_block(layers=2, seq=6))
    rng = np.random.default_rng(0)
    data = sample(ug.model, n=96, seed=0)
    data["mask"] = np.where(rng.random((96, 1, 1, 6)) < 0.2, -1e4, 0.0).astype(np.float32)
    return ug, data
