"""The Python API: compress, analyze, compile. Typed and usable without the CLI."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from scmopt import __version__, artifact
from scmopt.analysis.align import check_block
from scmopt.analysis.criteria import CRITERIA as ALL_CRITERIA
from scmopt.compiler.compile import compile_plan
from scmopt.errors import ScmoptError
from scmopt.evaluation import agreements, cells, validate
from scmopt.evaluation.confidence import betting_lower, needed_rate
from scmopt.io import graph
from scmopt.io.data import load_data, random_data
from scmopt.ops import cost
from scmopt.plan import Plan
from scmopt.report import html as report
from scmopt.report.document import Report, validation_detail
from scmopt.runtime import work
from scmopt.units.analysis import UnitGraph
from scmopt.units.analysis import analyze as find_units

if TYPE_CHECKING:
    from scmopt.analysis.search import SearchResult

CRITERIA = tuple(ALL_CRITERIA)
DEFAULT_MIN_FIDELITY = 0.99  # the CLI's and the API's rule when none is given
# sites the final validation sweeps for IIA: three passes of both models per site, so a
# 43-site EfficientNet spent 22 of its 71 FPE there; more sites are sampled (validate.spread)
DEFAULT_IIA_CUTS = 16
Progress = Callable[[str, int, int], None]
Data = str | Path | dict[str, np.ndarray] | None


@dataclass
class Result:
    """What `compress` returns: the plan, the compiled model and every measured number.

    report["fidelity"] is the number the CLI prints (scmopt.report.document.Report); kept is
    the compiled channel map: cut -> the original channel index of each compiled channel
    (what scmopt.evaluation.validate.evaluate_artifact needs for interventions)."""

    plan: Plan
    model: onnx.ModelProto
    unit_graph: UnitGraph
    report: Report
    notes: list[str] = field(default_factory=list)
    kept: dict[str, np.ndarray] = field(default_factory=dict)
    missed: str | None = None  # the rule the run could not meet on the validation split

    def save(self, path: str | Path) -> None:
        graph.save(self.model, path)


def _model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    m = graph.load(model)
    graph.check(m, "input model")
    return m


def prepare_data(
    model: onnx.ModelProto, data: Data, samples: int | None = None, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray | None, list[str]]:
    """Feeds, labels and notes (e.g. that statistics come from random inputs)."""
    specs = graph.input_specs(model)
    notes: list[str] = []
    labels = None
    if data is None:
        feeds = random_data(specs, samples or 256, seed)
        notes.append(
            "no --data: statistics come from random inputs and are not meaningful for a trained "
            "model; pass calibration data"
        )
    elif isinstance(data, dict):
        from scmopt.io.data import check_data

        data = dict(data)
        labels = data.pop("y", None)
        feeds = check_data(data, labels, specs)
    else:
        feeds, labels = load_data(data, specs)
    if samples is not None:
        feeds = {k: v[:samples] for k, v in feeds.items()}
        labels = None if labels is None else labels[:samples]
    n = len(next(iter(feeds.values())))
    if n < 8:
        raise ScmoptError(f"need at least 8 calibration samples, got {n}")
    return feeds, labels, notes


def analyze(
    model: str | Path | onnx.ModelProto | UnitGraph,
    data: Data = None,
    *,
    budget: float | None = None,
    min_fidelity: float | None = None,
    min_iia: float | None = None,
    keep: float | None = None,
    criterion: str = "curvature",
    fold: bool = True,
    samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    swap_p: float = 0.5,
    metric: str | agreements.Metric | None = None,
    keep_heads: float | None = None,
    flops: float | None = None,
    per_flop: bool = False,
) -> Plan:
    """Runs the budgeted search (DESIGN §2) and returns the abstraction plan. `swap_p`,
    `metric`: see compress."""
    ug = model if isinstance(model, UnitGraph) else find_units(_model(model))
    feeds, _, _ = prepare_data(ug.model, data, samples, seed)
    chosen, _ = resolve_metric(ug.model, feeds, metric)
    return _search(
        ug, feeds, budget=budget, min_fidelity=min_fidelity, min_iia=min_iia, keep=keep,
        criterion=criterion, fold=fold, seed=seed, batch_size=batch_size, device=device,
        progress=progress, p=swap_p, metric=chosen, keep_heads=keep_heads, flops=flops,
        per_flop=per_flop,
    ).plan  # fmt: skip


def resolve_metric(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], metric: str | agreements.Metric | None
) -> tuple[agreements.Metric, str]:
    """The agreement for the model's first output, bound to its per-sample shape (one run on
    one sample gives the real shape), and a line saying which metric and why. A metric this
    function resolved already (the CLI's check before the work) is returned as it is."""
    if isinstance(metric, agreements.Metric) and metric.note:
        return metric, metric.note
    shape = tuple(validate.logits(model, {k: v[:1] for k, v in feeds.items()}).shape[1:])
    name = model.graph.output[0].name
    if metric is None:
        chosen, why = agreements.choose(shape)
        line = f"metric: {chosen.spec} for output {name!r}: {why} (--metric to change)"
    else:
        chosen = agreements.parse(metric).bind(shape)
        line = f"metric: {chosen.spec} for output {name!r} (--metric)"
    return dataclasses.replace(chosen, note=line), line


def _search(ug: UnitGraph, feeds: dict[str, np.ndarray], *, criterion: str,
            progress: Progress | None = None, **options):  # fmt: skip
    """The search on checked feeds; returns the SearchResult (plan, trajectory, metrics).
    The options become one frozen SearchConfig here, the only place it is built."""
    from scmopt.analysis.config import SearchConfig
    from scmopt.analysis.search import search
    from scmopt.io.data import padding_mask

    config = SearchConfig(criterion=criterion, mask_input=padding_mask(feeds), **options)
    return search(ug, feeds, config, progress=progress)


def compile(model: str | Path | onnx.ModelProto | UnitGraph, plan: Plan) -> onnx.ModelProto:  # noqa: A001
    """Compiles `plan` into a smaller model computing exactly the plan's simulation."""
    ug = model if isinstance(model, UnitGraph) else find_units(_model(model))
    return compile_plan(ug, plan).model


@work.counted
def compress(
    model: str | Path | onnx.ModelProto,
    data: Data = None,
    *,
    budget: float | None = None,
    min_fidelity: float | None = None,
    min_iia: float | None = None,
    keep: float | None = None,
    criterion: str = "curvature",
    fold: bool = True,
    samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
    holdout: float = 0.2,
    tolerance: float = 1e-4,
    progress: Progress | None = None,
    align: int | None = None,
    swap_p: float = 0.5,
    plan: Plan | SearchResult | None = None,
    on_plan: Callable[[SearchResult], None] | None = None,
    certify: float | None = None,
    delta: float = 0.05,
    metric: str | agreements.Metric | None = None,
    fold_parents: int = 6,
    keep_heads: float | None = None,
    flops: float | None = None,
    per_flop: bool = False,
    iia_cuts: int | None = DEFAULT_IIA_CUTS,
) -> Result:
    """Finds a sparse causal abstraction of `model` and compiles it.

    Exactly one stopping rule: `budget` (max normalised interventional risk), `min_fidelity`,
    `min_iia` or `keep` (fraction of prunable units kept: of the attention heads and of the
    other units each, heads at `keep_heads` when given) or `flops` (compiled FLOPs at most this
    fraction of the original's, by predicted risk per FLOP saved; a compiled model above it sets
    `Result.missed`); `per_flop`: every rule ranks removals by predicted risk per FLOP saved
    (fewer FLOPs at the same fidelity; fewer units removed). A fraction `holdout` of the data is
    never seen by the search; the final fidelity, IIA and compile error are measured on it, on
    the compiled model itself. Raises CompileMismatch when the compiled model differs from the
    plan's simulation by more than `tolerance` (relative to the output scale). `align`: re-keep
    the costliest removed units until every convolutional cut keeps a multiple of `align`
    channels (scmopt.align; faster onnxruntime CPU kernels), before compiling and measuring.
    `swap_p`: the probability p with which an interchange swaps each kept unit in the
    interventional distribution I (DESIGN §2) that fits, risk and IIA are made under. 0.5
    weighs interventions as DESIGN does; a small p (0.05) fits closer to plain inputs: higher
    fidelity and lower plain risk, at about the same IIA at p = 0.5 and a slightly higher
    interventional risk at p = 0.5 (BENCHMARKS.md §9).
    `on_plan(search_result)` is called as soon as the search ends (before `align`, compile and
    validation): a checkpoint. `plan` (a Plan, or a SearchResult such a callback got) skips the
    search: it is aligned, compiled and measured as if the search had just returned it.
    Without a rule the CLI's default holds: min_fidelity 0.99. `certify` F0 accepts a plan only
    when the anytime-valid lower bound (level `delta`, validation split) on its fidelity is
    >= F0. A fidelity target or certificate missed on the validation split is searched again
    with a stricter target (at most three times, stopping early when a stricter search
    returns a plan already built); if it still misses, `Result.missed` says so (the
    CLI exits 4). The compiled model is never larger than the original (compiler.cost_guard).
    `metric`: what agreement means for the first output (evaluation.agreements spec such as
    "top1", "token-top1", "cosine", "rel-mse", "within:3"); None chooses from the output's
    shape and says why in the notes. Fidelity, IIA, the rules and the bounds all use it.
    `fold_parents`: at most this many kept units per fold (1: one-parent folds, so each
    removed unit belongs wholly to one kept unit's cell; evaluation.cells).
    `iia_cuts`: the final validation's IIA sweeps at most this many sites, evenly spread in
    topological order (None: every site); the report lists the others as unmeasured.
    """
    t0 = time.perf_counter()
    if align is not None:
        check_block(align)
    if metric is not None:
        agreements.parse(metric)  # a bad spec fails before any work
    if certify is not None and not 0 < certify < 1:
        raise ScmoptError(f"--certify must be in (0, 1), not {certify}")
    if not 0 < delta < 1:
        raise ScmoptError(f"--delta must be in (0, 1), not {delta}")
    if iia_cuts is not None and iia_cuts < 1:
        raise ScmoptError(f"--iia-cuts must be at least 1 (or 'all'), not {iia_cuts}")
    rules = (budget, min_fidelity, min_iia, keep, flops, certify)
    if certify is not None and any(r is not None for r in rules[:5]):
        raise ScmoptError("--certify is a stopping rule: give no other")
    if plan is None and all(r is None for r in rules):
        min_fidelity = DEFAULT_MIN_FIDELITY
    original = _model(model)
    ug = find_units(original)
    feeds, labels, notes = prepare_data(ug.model, data, samples, seed)
    n = len(next(iter(feeds.values())))
    ledger = work.active()  # FPE: one pass of the model over these n samples (work.counted)
    ledger.samples = n
    chosen, metric_line = resolve_metric(ug.model, feeds, metric)
    from scmopt.io.data import padding_mask

    if (masked := padding_mask(feeds)) is not None:
        notes.append(f"padding tokens (0 in input {masked!r}) count in no statistic")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(int(round(holdout * n)), 4)
    val, fit = order[:n_val], order[n_val:]
    fit_feeds = {k: v[fit] for k, v in feeds.items()}
    val_feeds = {k: v[val] for k, v in feeds.items()}
    # costs before the search, so that nothing can fail after it (never raises; unknown shapes
    # are reported)
    cost_before = cost.model_cost(ug.model, {k: v[:1] for k, v in fit_feeds.items()}, device)
    ledger.node_macs = cost_before.macs
    t1 = time.perf_counter()
    saved = plan
    target = certify if certify is not None else min_fidelity
    if certify is not None:  # the observed rate the validation split must show to certify F0
        need = needed_rate(certify, n_val, delta)
        if need is None:
            raise ScmoptError(
                f"--certify {certify} cannot be reached with {n_val} validation samples at "
                f"--delta {delta} (all-agreeing samples certify "
                f"{betting_lower(np.ones(n_val), delta):.4f}): give more data or a lower F0"
            )
        target = max(certify, need)
    check = artifact.Validation(cost_before, val_feeds, None if labels is None else labels[val],
                                batch_size, device, tolerance, swap_p, seed, chosen,
                                iia_cuts)  # fmt: skip

    def why_not(m) -> str | None:
        return artifact.missed(m, min_fidelity, certify, delta, seed)

    missed: str | None = None
    tried: set[str] = set()  # plans already built: a stricter search that returns one stops
    searched: list[SearchResult] = []
    previous: float | None = None  # the last attempt's score on the validation split
    rule_missed: str | None = None  # the fidelity rule's miss (not the --flops one)
    for attempt in range(4):
        t1 = time.perf_counter()
        if saved is None:
            found = _search(
                ug, fit_feeds, budget=budget, min_fidelity=target, min_iia=min_iia,
                keep=keep, criterion=criterion, fold=fold, batch_size=batch_size,
                device=device, seed=seed, progress=progress, p=swap_p, metric=chosen,
                max_coef=fold_parents, keep_heads=keep_heads, flops=flops,
                per_flop=per_flop,
            )  # fmt: skip
            searched.append(found)
            if on_plan is not None:
                on_plan(found)
        else:  # a saved search: no search again
            from scmopt.analysis.search import SearchResult

            found = saved if isinstance(saved, SearchResult) else SearchResult(saved)
            found.plan.validate(ug)
        t2 = time.perf_counter()
        built = artifact.build(ug, found.plan, found.scores, align, check)
        missed = rule_missed = why_not(built.metrics)
        if flops is not None and built.cost.flops > flops * cost_before.flops:
            missed = (f"compiled FLOPs {built.cost.flops / max(cost_before.flops, 1):.3f} of "
                      f"the original's, above --flops {flops:g}")  # fmt: skip
        again = built.plan.to_json() not in tried
        tried.add(built.plan.to_json())
        score = _score(built.metrics, certify, delta, seed)
        gained = previous is None or score > previous
        previous = score
        if (missed is None or saved is not None or target is None or target >= 1.0
                or attempt == 3 or not again or not gained):  # fmt: skip
            if missed is not None and not again:
                notes.append("the stricter search returned the same plan: no other to try")
            elif missed is not None and not gained:
                notes.append("the stricter search did no better on the validation split: no "
                             "further search")  # fmt: skip
            break
        notes.append(f"{missed}: searching again with a stricter target")
        target = min(1.0, target + (1.0 - target) / 2)  # halve the allowed disagreement
    if rule_missed is not None and target is not None:
        # the rule missed on every search: back to the latest accepted round that meets it
        from scmopt.analysis.search import SearchResult

        for found_ in reversed(searched):
            if (back := artifact.walk_back(ug, found_, align, check, why_not)) is not None:
                point, built, builds = back
                notes.append(
                    f"{missed}: walked back to round {point.row['round']}'s plan, which meets it "
                    f"({len(found_.plan.removed) - len(point.plan.removed)} units of the later "
                    f"rounds re-kept; {builds} plans built)"
                )  # fmt: skip
                missed = None
                found = SearchResult(point.plan, found_.trajectory, dict(point.row),
                                     found_.scores, found_.timing)  # fmt: skip
                if on_plan is not None:
                    on_plan(found)
                break
    plan, compiled, cost_after, err, m = (built.plan, built.compiled, built.cost, built.error,
                                          built.metrics)  # fmt: skip
    t3 = t2 + built.seconds["compile"]
    notes.extend(built.notes)
    y_val = check.labels
    if missed is not None:
        notes.append(f"warning: {missed}")
    if m.unmeasured:
        swept = len(m.iia_per_cut)
        notes.append(f"IIA and risk on the validation split over {swept} of "
                     f"{swept + len(m.unmeasured)} sites, evenly spread (--iia-cuts all: "
                     f"every site)")  # fmt: skip
    notes.extend(_other_output_notes(m.other_outputs, ug.model.graph.output[0].name,
                                     min_fidelity))  # fmt: skip
    t4 = time.perf_counter()
    rep = Report(
        scmopt_version=__version__,
        input=str(model) if not isinstance(model, onnx.ModelProto) else "<in-memory model>",
        units=report.unit_counts(ug, plan),
        params={"before": cost_before.params, "after": cost_after.params},
        flops={
            "before": cost_before.flops,
            "after": cost_after.flops,
            "unknown": {"before": cost_before.unknown, "after": cost_after.unknown},
        },
        fidelity=m.fidelity,
        validation=validation_detail(m, p=swap_p, search=found.metrics, delta=delta,
                                     seed=seed),  # fmt: skip
        compile_max_abs_error=err,
        timing_s={
            "total": time.perf_counter() - t0,
            "load": t1 - t0,
            "analysis": t2 - t1,
            "compile": t3 - t2,
            "validate": t4 - t3,
            "search": dict(found.timing),  # the analysis stages
        },
        work=ledger.as_dict(),
        groups=report.group_rows(ug, plan),
        cells=cells.cells(ug, plan),
        plan=plan.to_dict(),
        trajectory=found.trajectory,
        scores=dict(found.scores),
        notes=notes,
        settings={
            "criterion": criterion,
            "fold": fold,
            "budget": budget,
            "min_fidelity": min_fidelity,
            "min_iia": min_iia,
            "keep": keep,
            "keep_heads": keep_heads,
            "flops": flops,
            "per_flop": per_flop,
            "certify": certify,
            "delta": delta,
            "seed": seed,
            "swap_p": swap_p,
            "metric": chosen.spec,
            "fold_parents": fold_parents,
            "iia_cuts": iia_cuts,
            "metric_why": metric_line,
            "samples": n,
            "holdout": n_val,
        },  # fmt: skip
        accuracy=None if y_val is None else
        {"before": m.accuracy_original, "after": m.accuracy, "samples": int(len(y_val))},
    )  # fmt: skip
    out = _with_metadata(compiled.model, plan, rep)
    return Result(plan, out, ug, rep, notes, dict(compiled.kept_positions), missed)


def _other_output_notes(others: list[dict], analysed: str,
                        min_fidelity: float | None) -> list[str]:  # fmt: skip
    """A line per output the search did not read, with its agreement on the validation split;
    a warning where it is below the fidelity rule (which binds the analysed output only)."""
    lines = []
    for o in others:
        line = (f"output {o['output']!r} (not analysed; the search reads {analysed!r}, "
                f"--output to change): {o['metric']} agreement {o['agreement']:.4f} on the "
                f"validation split")  # fmt: skip
        if min_fidelity is not None and o["agreement"] < min_fidelity:
            line = f"warning: {line}, below --min-fidelity {min_fidelity}"
        lines.append(line)
    return lines


def _score(m, certify: float | None, delta: float, seed: int) -> float:
    """What a stricter search must raise on the validation split to be worth another: the
    certified lower bound, or the fidelity."""
    if certify is not None:
        return float(m.confidence(delta, seed)["fidelity"]["lower"])
    return float(m.fidelity)


def _with_metadata(model: onnx.ModelProto, plan: Plan, rep: Report) -> onnx.ModelProto:
    summary = {k: rep[k] for k in ("units", "params", "flops", "compile_max_abs_error",
                                   "fidelity")}  # fmt: skip
    summary.update({k: rep["validation"][k] for k in ("risk", "iia", "metric")})
    graph.set_metadata(model, {"scmopt.version": __version__, "scmopt.plan": plan.to_json(),
                               "scmopt.summary": json.dumps(summary, default=float)})  # fmt: skip
    return model


def metric_from_model(model: onnx.ModelProto) -> str | None:
    """The metric spec a compressed model was made with (its metadata), if any."""
    summary = graph.metadata(model, "scmopt.summary")
    return None if summary is None else json.loads(summary).get("metric")


def plan_from_model(model: onnx.ModelProto) -> Plan | None:
    """The plan a compressed model carries in its metadata, if any."""
    plan = graph.metadata(model, "scmopt.plan")
    return None if plan is None else Plan.from_json(plan)
