"""Selection criteria as values: how each estimates curvature and ranks units (DESIGN §2).

One code path serves every criterion; a Criterion only says which curvature estimator feeds
the second-order risk, what the units are ranked by, and what its scores may be used for.
"""

from __future__ import annotations

from dataclasses import dataclass

from scmopt.errors import ScmoptError


@dataclass(frozen=True)
class Criterion:
    name: str
    curvature: str  # "unit" (screened finite differences), "layer", "uniform", "ablation"
    ranking: str  # "risk" (second-order risk), "magnitude" (consumer L1), "random"
    calibrated: bool  # scores are predicted risks: a budget rule can spend them
    coupled: bool  # joint selection uses the curvature coupling between units of a cut
    description: str

    @property
    def ranks_by_risk(self) -> bool:
        return self.ranking == "risk"


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        Criterion(
            "curvature",
            "unit",
            "risk",
            True,
            True,
            "per-unit curvature along each unit's replacement, layer-screened",
        ),
        Criterion(
            "layer",
            "layer",
            "risk",
            True,
            True,
            "one curvature per cut times consumer weight norms",
        ),
        Criterion(
            "variance",
            "uniform",
            "risk",
            False,
            False,
            "uniform curvature: activation variance (variance pruning)",
        ),
        Criterion(
            "magnitude", "uniform", "magnitude", False, False, "L1 norm of the consumer weights"
        ),
        Criterion("random", "uniform", "random", False, False, "a seeded random order"),
        Criterion(
            "ablation",
            "ablation",
            "risk",
            True,
            True,
            "each replacement's exact effect on all fit data (brute-force baseline)",
        ),
    )  # fmt: skip
}


def criterion(name: str) -> Criterion:
    """The registered criterion, or a ScmoptError naming the choices."""
    try:
        return CRITERIA[name]
    except KeyError:
        raise ScmoptError(f"unknown criterion {name!r} (one of {', '.join(CRITERIA)})") from None
