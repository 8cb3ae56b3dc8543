"""The search's arguments checked before any work: exactly one stopping rule in its range, a
known criterion, calibration data that fits the model's inputs."""

from __future__ import annotations

import math

import numpy as np

from scmopt.analysis.criteria import criterion as get_criterion
from scmopt.errors import ScmoptError
from scmopt.units.analysis import UnitGraph


def check_arguments(
    ug: UnitGraph,
    data: dict[str, np.ndarray],
    budget: float | None,
    min_fidelity: float | None,
    min_iia: float | None,
    keep: float | None,
    criterion: str,
    p: float,
    holdout: float,
    batch_size: int,
    flops: float | None = None,
) -> str:
    rules = {"budget": budget, "min_fidelity": min_fidelity, "min_iia": min_iia, "keep": keep,
             "flops": flops}  # fmt: skip
    given = [k for k, v in rules.items() if v is not None]
    if len(given) != 1:
        raise ScmoptError(
            "give exactly one stopping rule (budget, min_fidelity, min_iia, keep or flops); got "
            + (", ".join(given) if given else "none")
        )
    rule = given[0]
    value = rules[rule]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScmoptError(f"{rule} must be a finite number, not {value!r}")
    if rule in ("keep", "flops") and not 0 < value <= 1:
        raise ScmoptError(f"{rule} must be a fraction in (0, 1], not {value}")
    if rule in ("min_fidelity", "min_iia") and not 0 <= value <= 1:
        raise ScmoptError(f"{rule} must be in [0, 1], not {value}")
    if rule == "budget" and value < 0:
        raise ScmoptError(f"budget must be >= 0, not {value}")
    get_criterion(criterion)
    if not 0 < p <= 1:
        raise ScmoptError(f"swap probability p must be in (0, 1], not {p}")
    if not 0 < holdout < 1:
        raise ScmoptError(f"holdout must be a fraction in (0, 1), not {holdout}")
    if batch_size < 1:
        raise ScmoptError(f"batch_size must be >= 1, not {batch_size}")
    if not data:
        raise ScmoptError("no calibration data")
    names = {i.name for i in ug.model.graph.input}
    missing = names - set(data)
    if missing:
        raise ScmoptError(f"calibration data lacks model input(s) {', '.join(sorted(missing))}")
    lengths = {len(v) for v in data.values()}
    if len(lengths) != 1:
        raise ScmoptError(f"calibration arrays have different lengths {sorted(lengths)}")
    if lengths.pop() < 4:
        raise ScmoptError("need at least 4 calibration samples (fit and held-out splits)")
    return rule
