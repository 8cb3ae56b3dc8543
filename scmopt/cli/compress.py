"""`scmopt compress IN OUT` (also plain `scmopt IN OUT`): checks, search, compile, write."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from scmopt import examples
from scmopt.analysis.criteria import CRITERIA
from scmopt.api import DEFAULT_IIA_CUTS, DEFAULT_MIN_FIDELITY
from scmopt.cli import checks, planfile
from scmopt.cli.common import fail, num
from scmopt.cli.progress import Progress
from scmopt.errors import ScmoptError
from scmopt.io import graph
from scmopt.runtime import work

SEARCH_ONLY = (
    "budget",
    "min_fidelity",
    "min_iia",
    "keep",
    "keep_heads",
    "flops",
    "per_flop",
    "certify",
    "criterion",
    "no_fold",
    "fold_parents",
)
# --plan: saved unless given
REPLAYED = ("seed", "swap_p", "samples", "batch_size", "align", "metric")


class SiteCount(click.ParamType):
    """A positive number of sites, or `all`."""

    name = "N|all"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | None:
        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() == "all":
            return None
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor 'all'", param, ctx)
        if n < 1:
            self.fail(f"{n} is below 1", param, ctx)
        return n


@click.command()
@click.argument("in_path", metavar="IN.onnx", type=click.Path(dir_okay=False))
@click.argument("out_path", metavar="OUT.onnx", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(), help=".npz (arrays by input name, labels under y), "
              ".npy, or a folder of images")  # fmt: skip
@click.option("--budget", type=click.FloatRange(min=0), help="max normalised interventional risk")
@click.option("--min-fidelity", type=click.FloatRange(0, 1),
              help="min agreement with the original (under --metric)")  # fmt: skip
@click.option("--min-iia", type=click.FloatRange(0, 1),
              help="min interchange-intervention accuracy")  # fmt: skip
@click.option("--keep", type=click.FloatRange(0, 1, min_open=True),
              help="fraction of prunable units to keep (of attention heads and of the other "
              "units each)")  # fmt: skip
@click.option("--keep-heads", type=click.FloatRange(0, 1, min_open=True),
              help="with --keep: fraction of attention heads to keep (default: --keep's)",
              )  # fmt: skip
@click.option("--flops", type=click.FloatRange(0, 1, min_open=True),
              help="compiled FLOPs at most this fraction of the original's (units removed by "
              "predicted risk per FLOP saved)")  # fmt: skip
@click.option("--per-flop", is_flag=True, help="rank removals by predicted risk per FLOP "
              "saved under any rule (--flops always does)")  # fmt: skip
@click.option("--certify", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="accept a plan only when its fidelity's anytime-valid lower bound on the "
              "validation split is >= F0")  # fmt: skip
@click.option("--delta", default=0.05, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="the certificate holds with probability >= 1 - delta")  # fmt: skip
@click.option("--metric", help="what agreement means for the output: top1, topk[:K], "
              "token-top1, cosine, rel-mse, within:N, detection[:CONF] (default: chosen from the "
              "output's shape, with a line saying why)")  # fmt: skip
@click.option("--criterion", default="curvature", show_default=True,
              type=click.Choice(list(CRITERIA)))  # fmt: skip
@click.option("--no-fold", is_flag=True, help="constants only, no folding")
@click.option("--fold-parents", default=6, show_default=True, type=click.IntRange(1, 64),
              help="kept units a removed unit may be folded onto (1: one-parent folds, each "
              "removed unit merged into one kept unit's cell)")  # fmt: skip
@click.option("--samples", type=click.IntRange(min=1), help="use at most N calibration samples")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--swap-p", default=0.5, show_default=True, type=float,
              help="probability that an interchange intervention swaps each kept unit: the "
              "distribution fits, risk and IIA are made under; small values (0.05) favour "
              "fidelity on plain inputs")  # fmt: skip
@click.option("--align", type=click.IntRange(min=1), help="keep multiples of N channels in "
              "convolutional layers (8: AVX2, 16: AVX-512; faster onnxruntime CPU "
              "kernels)")  # fmt: skip
@click.option("--iia-cuts", default=str(DEFAULT_IIA_CUTS), show_default=True, type=SiteCount(),
              help="validate IIA at N sites evenly spread through the model, or 'all' "
                   "(three passes of both models per site)")  # fmt: skip
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="write the report (.html or .json)")  # fmt: skip
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False),
              help="compile and report a saved plan (OUT.plan.json of an earlier run) without "
              "searching again")  # fmt: skip
@click.option("--output", "output_name", help="model output holding the logits (default: first)")
@click.option("--force", is_flag=True, help="allow OUT to overwrite IN")
@click.option("-q", "--quiet", is_flag=True, help="no progress, warnings or summary")
@click.option("-v", "--verbose", is_flag=True, help="tracebacks on errors")
def compress(**o: Any) -> None:
    """Find a sparse causal abstraction of IN and write it, compiled, to OUT.

    Every input is checked before the work starts. The search's plan is saved to
    OUT.plan.json as soon as the search ends; `--plan` compiles it again without searching.
    """
    progress = Progress(o["quiet"])
    saved: list[Path] = []
    try:
        run = _preflight(o)
        progress.pending.append(run["metric_line"])  # shown once the work starts
        from scmopt.api import compress as compress_api

        if run["given"] is not None:
            progress.note(f"--plan {o['plan_path']}: no search; compile and validate",
                          bars=False, stage=True)  # fmt: skip

        def on_plan(found: Any) -> None:
            planfile.save(found, run["plan_file"], run["settings"])
            saved.append(run["plan_file"])
            progress.note(f"search done: plan saved to {run['plan_file']}")
            progress.note("compile and validate", bars=False, stage=True)

        result = compress_api(
            run["model"], run["data"], budget=o["budget"], min_fidelity=o["min_fidelity"],
            min_iia=o["min_iia"], keep=o["keep"], criterion=o["criterion"],
            fold=not o["no_fold"], samples=o["samples"], batch_size=o["batch_size"],
            device=o["device"], seed=o["seed"], progress=progress, align=o["align"],
            swap_p=o["swap_p"], plan=run["given"], on_plan=on_plan, certify=o["certify"],
            delta=o["delta"], metric=run["metric"], fold_parents=o["fold_parents"],
            keep_heads=o["keep_heads"], flops=o["flops"], per_flop=o["per_flop"],
            iia_cuts=o["iia_cuts"],
        )  # fmt: skip
        progress.close()
        result.report["input"], result.report["output"] = run["in_path"], o["out_path"]
        result.report["notes"].extend(run["notes"])
        model_out = _restore_outputs(result.model, graph.load(run["in_path"]))
        _write(result, model_out, o["out_path"], o["report_path"])
        if not o["quiet"]:
            _summary(result.report, o["report_path"], o["out_path"], saved)
        if result.missed is not None:
            click.echo(f"scmopt: warning: {result.missed}", err=True)
            sys.exit(4)
    except KeyboardInterrupt:
        progress.close()
        click.echo("scmopt: interrupted" + _kept(saved), err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - one-line errors for users
        progress.close()
        fail(exc, o["verbose"], _kept(saved))


def _swept(fid: dict[str, Any]) -> str:
    """ "; N of M sites" when the IIA sweep left some out (--iia-cuts)."""
    left = len(fid.get("iia_unmeasured") or [])
    return f"; {len(fid['iia_per_cut'])} of {len(fid['iia_per_cut']) + left} sites" if left else ""


def _kept(saved: list[Path]) -> str:
    return f"; the search's plan is saved: --plan {saved[0]}" if saved else ""


def _preflight(o: dict[str, Any]) -> dict[str, Any]:
    """Checks every input before any work; prints the warnings once all checks pass."""
    rules = [k for k in ("budget", "min_fidelity", "min_iia", "keep", "flops", "certify")
             if o[k] is not None]  # fmt: skip
    if len(rules) > 1:
        raise ScmoptError(
            "give one of --budget, --min-fidelity, --min-iia, --keep, --flops, --certify"
        )
    if o["keep_heads"] is not None and o["keep"] is None:
        raise ScmoptError("--keep-heads goes with --keep (the fraction of the other units)")
    if not 0 < o["swap_p"] <= 1:
        raise ScmoptError(f"--swap-p (the swap probability) must be in (0, 1], not {o['swap_p']}")
    if o["report_path"] and Path(o["report_path"]).suffix not in (".html", ".json"):
        raise ScmoptError("--report must end in .html or .json")
    given, saved = planfile.load(o["plan_path"]) if o["plan_path"] else (None, {})
    if given is not None:
        source = click.get_current_context().get_parameter_source
        typed = [k for k in SEARCH_ONLY if source(k) == ParameterSource.COMMANDLINE]
        if typed:
            flag = "--" + typed[0].replace("_", "-")
            raise ScmoptError(f"{flag} shapes the search; --plan compiles a saved plan as it is")
        for k in REPLAYED + SEARCH_ONLY:  # as the search ran, unless given now
            if k in saved and source(k) != ParameterSource.COMMANDLINE:
                o[k] = saved[k]
    elif not rules:
        o["min_fidelity"] = DEFAULT_MIN_FIDELITY
    in_path = examples.resolve(o["in_path"], "model")
    if Path(o["out_path"]).resolve() == Path(in_path).resolve() and not o["force"]:
        raise ScmoptError("OUT is the same file as IN; refusing to overwrite it (--force)")
    plan_file = planfile.path_for(o["out_path"])
    checks.writable(o["out_path"], "OUT")
    if o["report_path"]:
        if Path(o["report_path"]).resolve() in (Path(o["out_path"]).resolve(), plan_file.resolve()):
            raise ScmoptError(f"--report {o['report_path']} would overwrite OUT or its plan file")
        checks.writable(o["report_path"], "--report")
    data = examples.resolve(o["data"], "data") if o["data"] is not None else None
    model = _select_output(graph.load(in_path), o["output_name"])
    graph.check(model, "input model")
    from scmopt.api import prepare_data
    from scmopt.io.data import DataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        feeds, labels, _ = prepare_data(model, data, o["samples"], o["seed"])
    notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    notes += checks.held_out(len(next(iter(feeds.values()))), o["samples"], o["min_fidelity"])
    checks.runnable(model, feeds)
    from scmopt.api import resolve_metric

    metric, metric_line = resolve_metric(model, feeds, o["metric"])
    digests = {"model": planfile.digest(model=model), "data": planfile.digest(feeds, labels)}
    for what, value in digests.items():
        if given is not None and saved.get(f"{what}_sha1", value) != value:
            notes.append(f"--plan {o['plan_path']} was searched on another {what}; the search's "
                         "numbers in the report (risk, trajectory) describe that one")  # fmt: skip
    if not o["quiet"]:
        if data is None:
            click.echo("scmopt: warning: no --data: statistics come from random inputs and are "
                       "not meaningful for a trained model", err=True)  # fmt: skip
        for note in notes:
            click.echo(f"scmopt: warning: {note}", err=True)
    settings = {k: o[k] for k in REPLAYED + SEARCH_ONLY}
    settings.update({f"{k}_sha1": v for k, v in digests.items()})
    fed = None if data is None else {**feeds, **({} if labels is None else {"y": labels})}
    return {"model": model, "data": fed, "in_path": str(in_path), "given": given,
            "plan_file": plan_file, "settings": settings, "notes": notes,
            "metric": metric, "metric_line": metric_line}  # fmt: skip


def _select_output(model, name):
    """Puts output `name` first (the analysis reads logits from the first output)."""
    if name is None:
        return model
    names = [o.name for o in model.graph.output]
    if name not in names:
        raise ScmoptError(f"model has no output {name!r} (outputs: {', '.join(names)})")
    outs = sorted(model.graph.output, key=lambda o: o.name != name)
    del model.graph.output[:]
    model.graph.output.extend(outs)
    return model


def _restore_outputs(model, original):
    order = {o.name: i for i, o in enumerate(original.graph.output)}
    outs = sorted(model.graph.output, key=lambda o: order.get(o.name, len(order)))
    del model.graph.output[:]
    model.graph.output.extend(outs)
    return model


def _write(result: Any, model: Any, out_path: str, report_path: str | None) -> None:
    """OUT and the report are written together or not at all (the report is made first)."""
    staged = _stage_report(result, report_path) if report_path else None
    try:
        graph.save(model, out_path)
        if staged is not None:
            try:
                staged.replace(report_path)
            except BaseException:
                Path(out_path).unlink(missing_ok=True)
                raise
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)


def _stage_report(result: Any, path: str) -> Path:
    from scmopt.report import html as report

    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    try:
        if path.endswith(".json"):
            report.write_json(result.report, tmp)
        else:
            report.write_html(result.report, tmp, result.unit_graph)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _certified(fid: dict) -> list[tuple[str, str]]:
    """The anytime-valid bounds as a statement, and the Markov bound only where it says
    something."""
    conf = fid.get("confidence", {})
    rows = []
    for what, c in conf.items():
        small = "; a small split: the bound is wide" if c["trials"] < 1000 else ""
        rows.append(("certified", f"{what} >= {c['lower']:.4f} with probability >= "
                     f"{1 - c['delta']:g} over the sampling of trials from this data "
                     f"({c['trials']:,} trials on the validation split{small})"))  # fmt: skip
    markov = 1 - fid.get("certificate", {}).get("bound", 1.0)
    if markov > 0:
        rows.append(("margin bound", f"fidelity >= {markov:.4f} (Markov, deterministic)"))
    return rows


def _p5(fid: dict) -> str:
    p5 = fid.get("agreement_p5")
    return "" if p5 is None else f"; 5th percentile {p5:.4f}"


def _summary(rep: dict, report_path: str | None, out_path: str, saved: list[Path]) -> None:
    u, fid = rep["units"], rep["validation"]
    rows = [
        ("units", f"{u['total']} total: {u['kept']} kept ({u['frozen']} frozen), "
                  f"{u['constant']} constant, {u['folded']} folded"),  # fmt: skip
        ("parameters", f"{rep['params']['before']:,} -> {rep['params']['after']:,} "
                       f"({rep['params']['after'] / max(rep['params']['before'], 1):.1%})"),
        ("FLOPs/sample", f"{rep['flops']['before']:,} -> {rep['flops']['after']:,} "
                         f"({rep['flops']['after'] / max(rep['flops']['before'], 1):.1%})"),
        ("risk", num(fid.get("risk"))),
        ("fidelity", f"{num(rep['fidelity'])} ({fid.get('metric', 'top1')}"
                     f"{_p5(fid)}, validation split, n={fid['samples']})"),
        ("IIA", f"{num(fid['iia'])} (p = {fid.get('iia_p', 0.5):g}; removed units keep their "
                f"base values in the original{_swept(fid)})"),
        ("IIA, cells", f"{num(fid.get('iia_cells'))} (the abstraction's alignment: an "
                       "interchange on a kept unit swaps its cell of folded units)"),
    ]  # fmt: skip
    rows += _certified(fid)
    if "accuracy" in rep:
        a = rep["accuracy"]
        rows.append(("accuracy", f"{a['before']:.4f} -> {a['after']:.4f}"))
    written = [out_path] + [f"plan {p}" for p in dict.fromkeys(saved)]
    rows += [
        ("compile error", f"{rep['compile_max_abs_error']:.2e} (vs simulation)"),
        ("time", f"{rep['timing_s']['total']:.1f} s"),
        ("work", work.describe(rep.get("work") or {})),
        ("written", ", ".join(written + ([f"report {report_path}"] if report_path else []))),
    ]
    for note in rep.get("notes", []):
        rows.append(("note", note))
    width = max(len(k) for k, _ in rows)
    click.echo("")
    for k, v in rows:
        click.echo(f"  {k:<{width}}  {v}")
