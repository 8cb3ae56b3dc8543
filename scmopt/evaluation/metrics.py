"""Every faithfulness number scmopt reports, computed in one place (DESIGN §2).

Pure numpy on model outputs: the search's held-out checks (analysis.measure), the compiled
artifact's validation (evaluation.validate), the CLI, the report and tools/ all end here.

- agreement: the mean of a per-sample agreement score in [0, 1] between a reference and a
  candidate output, the metric of evaluation.agreements (top1 by default; topk, token-top1,
  cosine, rel-mse, within:N, detection). Fidelity, IIA (the same agreement under interchange
  interventions), the stopping rules and the confidence bounds all use it.
- plain risk: E||f - f~||^2 / E||f - E f||^2 on plain inputs (f the reference).
- interventional risk: the same distortion averaged uniformly over the null intervention and
  the interchange at each cut, normalised by the same plain output variance.
- IIA per cut and its mean; accuracy against labels; the flip certificate (certificate.py).

`Tally` accumulates per-sample values at their row of the split and reduces them only at the
end, so the numbers do not depend on how the split was batched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from scmopt.evaluation import certificate, confidence
from scmopt.evaluation.agreements import TOP1, Metric, choose

Agreement = Callable[[np.ndarray, np.ndarray], np.ndarray]
Rows = slice | np.ndarray


def flat(outputs: np.ndarray) -> np.ndarray:
    """[n, ...] outputs as [n, K] float64."""
    a = np.asarray(outputs)
    return a.reshape(len(a), int(np.prod(a.shape[1:]))).astype(np.float64)


top1: Agreement = TOP1  # [n] per-sample top-1 agreement (argmax over all output values)


def agreement(reference: np.ndarray, candidate: np.ndarray, metric: Agreement = top1) -> float:
    """Mean per-sample agreement of `candidate` with `reference` (top-1 fidelity by default)."""
    scores = metric(reference, candidate)
    return float(np.mean(scores)) if len(scores) else 1.0


def sq_error(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """[n] per-sample squared distance ||f - f~||^2."""
    return np.sum((flat(reference) - flat(candidate)) ** 2, axis=1)


def output_variance(reference: np.ndarray) -> float:
    """E||f - E f||^2 over the samples (the scale risks are normalised by)."""
    f = flat(reference)
    if not len(f):
        return 0.0
    return float(np.mean(np.sum((f - f.mean(0)) ** 2, axis=1)))


def _normalise(value: float, variance: float) -> float:
    return value / max(variance, 1e-30)


def plain_risk(reference: np.ndarray, candidate: np.ndarray) -> float:
    """E||f - f~||^2 / E||f - E f||^2 on plain inputs."""
    return _normalise(float(np.mean(sq_error(reference, candidate))), output_variance(reference))


def interventional_risk(
    plain_sq: np.ndarray, swap_sq: Mapping[str, np.ndarray], variance: float
) -> float:
    """Normalised risk under I = {null} + {interchange at each cut}, uniform weights: the mean
    of the per-sample squared distances of every member, over the plain output variance."""
    members = [np.mean(plain_sq)] + [np.mean(v) for v in swap_sq.values()]
    return _normalise(float(np.mean(members)), variance)


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose top-1 output is the label."""
    return float(np.mean(flat(outputs).argmax(1) == np.asarray(labels).reshape(-1)))


def mean_iia(per_cut: Mapping[str, float]) -> float | None:
    """IIA averaged over cuts (None without cuts)."""
    return float(np.mean(list(per_cut.values()))) if per_cut else None


@dataclass
class Metrics:
    """Faithfulness of a candidate against a reference on one split (all over its n samples).

    fidelity: mean agreement on plain inputs; risk: interventional risk (None when measured
    without interventions); iia: mean over cuts of iia_per_cut (1.0 without any cut when
    interventions were on, None when off); d2: E||f - f~||^2 on plain inputs (unnormalised);
    certificate: the flip bound of certificate.py from d2 and the reference's margins."""

    risk: float | None
    fidelity: float
    iia: float | None
    iia_per_cut: dict[str, float] = field(default_factory=dict)
    risk_per_cut: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None  # of the candidate, when labels are given
    accuracy_original: float | None = None
    d2: float = 0.0
    risk_plain: float = 0.0
    certificate: dict[str, float] = field(default_factory=dict)
    n: int = 0
    unmapped: list[str] = field(default_factory=list)  # cuts a candidate's map did not cover
    # mapped sites left out of the interchange sweep (validate.evaluate_artifact's max_cuts):
    # iia and risk are then means over the swept sites only
    unmeasured: list[str] = field(default_factory=list)
    metric: str = "top1"  # the agreement's spec (evaluation.agreements)
    # IIA under the abstraction's own alignment (evaluation.cells), when it was measured
    iia_cells: float | None = None
    iia_cells_per_cut: dict[str, float] = field(default_factory=dict)
    fidelity_p5: float | None = None  # 5th percentile of the per-sample scores (graded metrics)
    # outputs other than the analysed first one: [{output, metric, why, agreement}] (plain)
    other_outputs: list[dict[str, Any]] = field(default_factory=list)
    # scores in [0, 1] per trial: one per sample (fidelity), one per cut and sample (iia)
    trials: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    _confidence: dict = field(default_factory=dict, repr=False, compare=False)

    def confidence(self, delta: float = 0.05, seed: int = 0) -> dict[str, dict[str, Any]]:
        """Anytime-valid lower bounds (evaluation.confidence) on fidelity (one trial per
        sample) and IIA (one per cut and sample, in a seeded random order) at level delta.
        Both bounds hold for any scores in [0, 1] (graded metrics too), not only 0/1 trials.
        Made once per (delta, seed): the rule check and the report both ask."""
        key = (delta, seed)
        if key in self._confidence:
            return self._confidence[key]
        out: dict[str, dict[str, Any]] = self._confidence.setdefault(key, {})
        for what, x in self.trials.items():
            x = np.random.default_rng([seed, 5]).permutation(x) if what == "iia" else x
            b = confidence.certify(x, delta)
            out[what] = {"point": b.point, "lower": b.lower, "hoeffding": b.hoeffding,
                         "betting": b.betting, "trials": b.n, "delta": delta}  # fmt: skip
        return out

    @property
    def flip_bound(self) -> float:
        """The certificate's bound on P(top-1 flips)."""
        return float(self.certificate.get("bound", 1.0))

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("trials", None)
        d.pop("_confidence", None)
        return d


class Tally:
    """Per-sample results of one comparison, stored at their rows of the split; `metrics()`
    reduces them. Guaranteed: the result depends only on the per-sample values, never on
    the order or size of the batches they arrived in."""

    def __init__(
        self,
        n: int,
        cuts: list[str],
        labels: np.ndarray | None = None,
        metric: Agreement = top1,
        positions: np.ndarray | None = None,
    ) -> None:
        self.n = n
        self.cuts = list(cuts)
        self.labels = None if labels is None else np.asarray(labels).reshape(-1)
        self.metric = metric
        # [n, T] weights of the token positions (the padding mask): token-top1 counts these
        self.positions = positions
        self._ref: np.ndarray | None = None  # [n, K] reference outputs on plain inputs
        self._plain = {"sq": np.zeros(n), "agree": np.zeros(n), "hit": np.zeros(n),
                       "hit_ref": np.zeros(n)}  # fmt: skip
        self._swap = {t: {"sq": np.zeros(n), "agree": np.zeros(n), "seen": np.zeros(n, bool)}
                      for t in self.cuts}  # fmt: skip
        self._cells = {t: {"agree": np.zeros(n), "seen": np.zeros(n, bool)} for t in self.cuts}

    def _agree(self, rows: Rows, reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """Per-sample agreement; interchanges keep the base sample's tokens, so its mask."""
        if self.positions is None or not isinstance(self.metric, Metric):
            return self.metric(reference, candidate)  # a plain agreement function
        return self.metric(reference, candidate, self.positions[rows])

    def plain(self, rows: Rows, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Plain-input outputs of both networks for the samples `rows` of the split."""
        ref = flat(reference)
        if self._ref is None:
            self._ref = np.zeros((self.n, ref.shape[1]))
        self._ref[rows] = ref
        self._plain["sq"][rows] = sq_error(ref, candidate)
        self._plain["agree"][rows] = self._agree(rows, ref, candidate)
        if self.labels is not None:
            y = self.labels[rows]
            self._plain["hit"][rows] = flat(candidate).argmax(1) == y
            self._plain["hit_ref"][rows] = ref.argmax(1) == y

    def swap(self, cut: str, rows: Rows, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Outputs of both networks under the interchange at `cut` for the samples `rows`."""
        self._swap[cut]["sq"][rows] = sq_error(reference, candidate)
        self._swap[cut]["agree"][rows] = self._agree(rows, reference, candidate)
        self._swap[cut]["seen"][rows] = True

    def swap_cells(self, cut: str, rows: Rows, reference: np.ndarray,
                   candidate: np.ndarray) -> None:  # fmt: skip
        """Outputs under the cell-aligned interchange at `cut` (evaluation.cells): the
        reference swapped each kept unit's whole cell, the candidate the kept unit."""
        self._cells[cut]["agree"][rows] = self._agree(rows, reference, candidate)
        self._cells[cut]["seen"][rows] = True

    def metrics(self, interventions: bool = True) -> Metrics:
        """The reduced numbers (interventions=False: risk and IIA are None)."""
        ref = self._ref if self._ref is not None else np.zeros((0, 1))
        var = output_variance(ref)
        n = max(self.n, 1)
        d2 = float(np.sum(self._plain["sq"])) / n
        # a cut's numbers average over the samples intervened on there: all of them in a full
        # sweep, the cut's share when each sample is intervened on at one cut (cuts nobody
        # was intervened on are left out)
        swaps = {t: v for t, v in self._swap.items() if v["seen"].any()}
        sq = {t: v["sq"][v["seen"]] for t, v in swaps.items()}
        iia_per = {t: float(np.sum(v["agree"][v["seen"]])) / int(v["seen"].sum())
                   for t, v in swaps.items()}  # fmt: skip
        cells = {t: float(np.mean(v["agree"][v["seen"]]))
                 for t, v in self._cells.items() if v["seen"].any()}  # fmt: skip
        labelled = self.labels is not None
        spec = getattr(self.metric, "spec", "top1")
        graded = not getattr(self.metric, "binary", True)
        return Metrics(
            risk=interventional_risk(self._plain["sq"], sq, var) if interventions else None,
            fidelity=float(np.sum(self._plain["agree"])) / n,
            iia=(mean_iia(iia_per) if iia_per else 1.0) if interventions else None,
            iia_per_cut=iia_per,
            risk_per_cut={t: _normalise(float(np.mean(v)), var) for t, v in sq.items()},
            accuracy=float(np.sum(self._plain["hit"])) / n if labelled else None,
            accuracy_original=float(np.sum(self._plain["hit_ref"])) / n if labelled else None,
            d2=d2,
            risk_plain=_normalise(d2, var),
            # the margin bound is on top-1 flips: it says nothing about another agreement
            certificate=certificate.margin_bound(certificate.margins(ref), d2)
            if spec == "top1" else {},
            n=self.n,
            metric=spec,
            iia_cells=mean_iia(cells) if interventions and cells else None,
            iia_cells_per_cut=cells if interventions else {},
            fidelity_p5=float(np.percentile(self._plain["agree"], 5))
            if graded and self.n else None,
            trials={"fidelity": self._plain["agree"].copy(),
                    **({"iia": np.concatenate([v["agree"][v["seen"]] for v in swaps.values()])}
                       if interventions and swaps else {})},
        )  # fmt: skip


def other_outputs(names: list[str], reference: list[np.ndarray], candidate: list[np.ndarray],
                  positions: np.ndarray | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Agreement on plain inputs of the outputs the search does not read (it analyses the
    first): per output the default metric for its shape (evaluation.agreements.choose), so a
    compressed model cannot quietly wreck a second head (boxes beside class scores)."""
    out = []
    for name, r, c in zip(names, reference, candidate, strict=True):
        r, c = np.asarray(r), np.asarray(c)
        metric, why = choose(r.shape[1:])
        scores = metric(r.reshape(len(r), -1), c.reshape(len(c), -1), positions)
        out.append({"output": name, "metric": metric.spec, "why": why,
                    "agreement": float(np.mean(scores)) if len(scores) else 1.0})  # fmt: skip
    return out
