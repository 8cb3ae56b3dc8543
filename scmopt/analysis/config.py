"""The search's options as one frozen value, built once (scmopt.api) and read everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from scmopt.evaluation.agreements import TOP1, Metric


@dataclass(frozen=True)
class SearchConfig:
    """Stopping rule (exactly one of budget, min_fidelity, min_iia, keep, flops), criterion and the
    knobs of DESIGN §2's search. The tactics at the end are the search's own choices, kept as
    fields so experiments can switch them without module-level toggles:
    toward_original: keep mode fits replacements toward the original network's values;
    try_targets: keep mode also tries fits toward the current plan's values, best held-out;
    refit_on_fail: a target rule refits a failing prefix once before halving it;
    min_step: the smallest prefix a target rule tries, as a fraction of the prunable units;
    shrink: fold/constant blends tried after the last refit; polish: max final refits;
    polish_gain: no further refit after one that lowered the held-out risk by less than this
    fraction (each costs a statistics pass)."""

    budget: float | None = None
    min_fidelity: float | None = None
    min_iia: float | None = None
    keep: float | None = None
    # keep mode: fraction of attention heads kept (None: keep's). Heads and the other units
    # are counted apart: a head spans 3 x Dh channels and their attention, a neuron one channel
    keep_heads: float | None = None
    # compiled FLOPs at most this fraction of the original's (analysis.flop_model), removing
    # units by predicted risk per FLOP saved
    flops: float | None = None
    # every rule ranks removals by predicted risk per FLOP saved (flops always does)
    per_flop: bool = False
    criterion: str = "curvature"
    fold: bool = True
    metric: Metric = TOP1  # the agreement fidelity and IIA are measured with
    # held-out checks intervene on each sample at one cut (2 passes, not 1 + cuts: FPE)
    one_cut_checks: bool = True
    # the graph input holding a [B, T] padding mask (io.data.padding_mask), if any
    mask_input: str | None = None
    p: float = 0.5
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    holdout: float = 0.25
    rounds: int | None = None
    curvature_samples: int = 32
    eps: float = 0.05
    # curvature probes by central finite differences (two subgraph runs per direction) instead
    # of forward ones (one, plus one base run per cut)
    central: bool = False
    probe_fraction: float = 0.5
    max_probes: int = 256
    # FPE per round (passes over the fit split) the layer screen and the per-unit probes may
    # each cost: fewer screen samples and a narrower band where they would cost more (12 with
    # central differences; forward ones probe the same band for half of it)
    probe_fpe: float | None = 6.0
    step: int | None = None
    max_coef: int = 6
    toward_original: bool = True
    try_targets: bool = True
    refit_on_fail: bool = True
    # target rules: a halved prefix smaller than this fraction of the prunable units (at least
    # one unit) is not tried; the search stops there instead of spending rounds of ~10 FPE on
    # one or two units each (EasyOCR: rounds 5-9 of 10 removed 1-2 of 1,120 units)
    min_step: float = 0.005
    shrink: tuple[float, ...] = (0.5, 0.0)
    polish: int = 3
    # the zoo's accepted refits gain 27-30% then 9-14% then 1-3%; EfficientNet-Lite1's 2.2%
    # then 2.0% for ~70 s each
    polish_gain: float = 0.05
    # keep every accepted round's plan (SearchResult.checkpoints) for a walk back; None: with
    # a fidelity target only (a plan is ~10 MB at EfficientNet's scale)
    checkpoints: bool | None = None

    @property
    def rule(self) -> str | None:
        """The stopping rule given (the first set, in field order), or None."""
        for name in ("budget", "min_fidelity", "min_iia", "keep", "flops"):
            if getattr(self, name) is not None:
                return name
        return None

    @property
    def rule_value(self) -> float | None:
        return None if self.rule is None else getattr(self, self.rule)
