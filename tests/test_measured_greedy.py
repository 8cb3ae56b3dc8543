"""The measured-greedy ceiling (tools/peers/measured_greedy.py): its closed-form fit under the
interchanges is the least squares of sampled interchanges, its one-parent fit recovers an exact
affine copy, and on a layer with exact copies the cell-aligned greedy removes the copies first
and keeps the cell-aligned IIA at 1."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parents[1] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from peers import companion as C  # noqa: E402
from peers import measured_greedy as G  # noqa: E402


def _layer(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, C.Layer]:
    """Six units: 0-2 independent, 3 = 2 x unit 0 + 1, 4 = -unit 1 + 0.5, 5 noisy; readout of
    all six into 3 classes."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    x = np.column_stack([z, 2 * z[:, 0] + 1, -z[:, 1] + 0.5, z[:, 2] + rng.normal(size=n)])
    a = x[:, :, None]
    w = rng.normal(size=(3, 6))
    lin = C.Linear(w, np.zeros(3))
    return a, C.Layer(a, a, np.zeros(n, dtype=int), lin, lin)


def test_interchange_fit_is_least_squares_of_sampled_interchanges():
    a, _ = _layer()
    removed, kept = np.array([3, 5]), np.array([0, 1, 2, 4])
    coef, off = G.interchange_fit(a, removed, kept, 0.5)
    x, base = C.interchange_sample(a, kept, 200_000, seed=1, p=0.5)
    design = np.column_stack([x[:, kept, 0], np.ones(len(x))])
    sol = np.linalg.lstsq(design, a[base][:, removed, 0], rcond=None)[0]
    assert np.allclose(coef, sol[:-1].T, atol=0.02)
    assert np.allclose(off[:, 0], sol[-1], atol=0.02)
    assert abs(coef[0, 0] - 1.0) < 0.02  # the exact copy 2 x u0 attenuated by 1 - p


def test_one_parent_fit_recovers_an_exact_copy():
    a, _ = _layer()
    coef, off = G.one_parent_fit(a, np.array([3, 4]), np.array([0, 1, 2, 5]), 0.5)
    assert np.allclose(coef, [[2, 0, 0, 0], [0, -1, 0, 0]], atol=1e-9)
    assert np.allclose(off[:, 0], [1, 0.5], atol=1e-9)


def test_cell_greedy_removes_the_copies_first_and_stays_exact():
    _, layer = _layer(n=600)
    ab, trace = G.greedy(layer, keep=4, cells=True, trials=500)
    assert set(ab.removed.tolist()) <= {0, 1, 3, 4}  # a copy or its parent: one of each pair
    assert trace == [1.0, 1.0]
    assert C.hits(layer, ab, seed=3, trials=2000, cells=True).all()
    assert not C.hits(layer, ab, seed=3, trials=2000).all()  # singleton: copies stay behind
