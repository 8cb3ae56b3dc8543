"""Keep mode counts attention heads and the other units apart (scmopt.analysis.groups): keep
0.5 removes half of the heads and half of the rest, `keep_heads` sets the heads' own fraction,
and every fraction that would empty a cut is refused before the search."""

from __future__ import annotations

from collections import Counter

import pytest

from scmopt.analysis.groups import HEADS, OTHERS, keep_targets, min_kept, round_quota
from scmopt.analysis.search import search
from scmopt.errors import ScmoptError


def _removed(ug, plan) -> Counter:
    return Counter(HEADS if ug.units[u].kind == "head" else OTHERS for u in plan.removed)


def test_targets_per_group(block):
    ug, _ = block
    by = Counter(HEADS if ug.units[u].kind == "head" else OTHERS for u in ug.prunable)
    assert by[HEADS] == 8 and by[OTHERS] > 8
    assert keep_targets(ug, 0.5, None) == {HEADS: 4, OTHERS: int(round(0.5 * by[OTHERS]))}
    assert keep_targets(ug, 0.5, 1.0)[HEADS] == 8
    assert min_kept(ug, {u for u in ug.prunable if ug.units[u].kind == "head"}) == 2


def test_round_quota_halves_each_group():
    assert round_quota({HEADS: 3, OTHERS: 10}, last=False) == {HEADS: 2, OTHERS: 5}
    assert round_quota({HEADS: 3, OTHERS: 0}, last=True) == {HEADS: 3}


@pytest.mark.parametrize("keep_heads, heads_gone", [(None, 4), (1.0, 0), (0.25, 6)])
def test_keep_removes_its_fraction_of_heads_and_of_the_rest(block, keep_heads, heads_gone):
    ug, data = block
    res = search(ug, data, keep=0.5, keep_heads=keep_heads, curvature_samples=8, polish=0)
    gone = _removed(ug, res.plan)
    others = sum(ug.units[u].kind != "head" for u in ug.prunable)
    assert gone[HEADS] == heads_gone
    assert gone[OTHERS] == others - int(round(0.5 * others))


def test_magnitude_criterion_honours_the_groups_too(block):
    ug, data = block
    res = search(ug, data, keep=0.5, criterion="magnitude", curvature_samples=8, polish=0)
    assert _removed(ug, res.plan)[HEADS] == 4


def test_a_head_fraction_that_empties_a_layer_is_refused(block):
    ug, data = block
    with pytest.raises(ScmoptError, match=r"keep_heads=0.1 leaves 1 of 8 attention heads, but "
                                          r"every cut must keep one: keep at least 2"):  # fmt: skip
        search(ug, data, keep=0.5, keep_heads=0.1)


@pytest.mark.parametrize("bad", [dict(keep=0.5, keep_heads=0.0), dict(min_fidelity=0.9,
                                                                      keep_heads=0.5)])  # fmt: skip
def test_keep_heads_needs_keep_and_a_fraction(block, bad):
    ug, data = block
    with pytest.raises(ScmoptError, match="keep_heads must be a fraction in"):
        search(ug, data, **bad)
