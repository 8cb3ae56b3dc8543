"""Anytime-valid lower bounds on a success rate (scmopt.evaluation.confidence)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scmopt.evaluation.confidence import betting_lower, certify, hoeffding_lower


def test_hoeffding_matches_its_formula():
    x = np.array([1.0] * 90 + [0.0] * 10)
    delta_n = 6 * 0.05 / (math.pi**2 * 100**2)
    assert hoeffding_lower(x, 0.05) == pytest.approx(0.9 - math.sqrt(math.log(1 / delta_n) / 200))


@pytest.mark.parametrize("p", [0.6, 0.9, 0.98])
def test_bounds_cover_the_true_rate(p):
    """Over 200 seeded sequences the lower bounds exceed the true rate at most delta of the
    time (here: never more than 5% + sampling slack)."""
    rng = np.random.default_rng(0)
    misses_h = misses_b = 0
    for _ in range(200):
        x = (rng.random(500) < p).astype(float)
        misses_h += hoeffding_lower(x, 0.05) > p
        misses_b += betting_lower(x, 0.05) > p
    assert misses_h <= 10 and misses_b <= 10


def test_betting_is_tighter_and_within_0_03_at_10k_trials():
    rng = np.random.default_rng(1)
    x = (rng.random(10_000) < 0.95).astype(float)
    b = certify(x, 0.05)
    assert b.betting > b.hoeffding
    assert b.point - b.lower <= 0.03
    assert b.lower <= b.point


def test_all_successes_and_errors():
    b = certify(np.ones(1000), 0.05)
    assert 0.98 < b.lower <= 1.0
    assert certify(np.zeros(0), 0.05).lower == 0.0
    with pytest.raises(ValueError):
        certify(np.array([1.5]), 0.05)  # graded scores are fine, out of [0, 1] is not
    with pytest.raises(ValueError):
        certify(np.ones(3), 1.5)


def test_needed_rate_is_the_smallest_certifiable_rate():
    from scmopt.evaluation.confidence import needed_rate

    r = needed_rate(0.95, 205)
    assert r is not None and 0.95 < r < 1.0
    k = round((1 - r) * 205)
    x = np.ones(205)
    x[np.linspace(0, 204, k + 1).round().astype(int)] = 0  # one failure more: not certified
    assert betting_lower(x, 0.05) < 0.95
    assert needed_rate(0.999, 205) is None


def test_many_trials_give_a_tight_bound_that_still_covers():
    """From HORIZON trials on the bets are tuned to the planned number: 10,000 IIA trials at a
    rate of 0.6 certify within 0.03 of the point (anytime-tuned bets: 0.039), and over 100
    repetitions at 600 trials the bound stays below the true rate far more often than 95%."""
    from scmopt.evaluation.confidence import HORIZON, betting_lower

    x = (np.random.default_rng(0).random(10_000) < 0.6).astype(float)
    b = certify(x, 0.05)
    assert b.point - b.lower < 0.03 and b.lower < 0.6
    rng = np.random.default_rng(1)
    misses = sum(betting_lower((rng.random(600) < 0.7).astype(float), 0.05) > 0.7
                 for _ in range(100))  # fmt: skip
    assert 600 >= HORIZON and misses <= 5
