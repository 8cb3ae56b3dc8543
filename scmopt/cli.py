"""Command line: `scmopt IN OUT` (= `scmopt compress IN OUT`), `inspect`, `validate`."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from scmopt import examples
from scmopt.errors import ScmoptError
from scmopt.io import graph
from scmopt.ops import cost

COMMANDS = ("compress", "inspect", "validate")


class DefaultGroup(click.Group):
    """Runs `compress` when the first argument is not a sub-command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compress", *args]
        return super().parse_args(ctx, args)


def _fail(exc: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
    if isinstance(exc, ScmoptError):
        click.echo(f"scmopt: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"scmopt: internal error: {type(exc).__name__}: {exc} (rerun with -v)", err=True)
    sys.exit(1)


class _Bars:
    """One progress bar per stage, fed by the search's progress callback."""

    def __init__(self, quiet: bool) -> None:
        # bars only on a terminal: in logs they would be one stale line per stage
        self.quiet = quiet or not sys.stderr.isatty()
        self.stage: str | None = None
        self.bar = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = click.progressbar(
                length=max(total, 1), label=f"{stage:<18}", file=sys.stderr
            )
            self.bar.__enter__()
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scmopt")
def main() -> None:
    """Compile a trained ONNX network into a sparse approximate causal abstraction.

    `scmopt IN.onnx OUT.onnx --data calib.npz` is short for `scmopt compress ...`.
    """


@main.command()
@click.argument("in_path", metavar="IN.onnx", type=click.Path(dir_okay=False))
@click.argument("out_path", metavar="OUT.onnx", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(), help=".npz (arrays by input name, labels under y), "
              ".npy, or a folder of images")  # fmt: skip
@click.option("--budget", type=float, help="max normalised interventional risk")
@click.option("--min-fidelity", type=float, help="min top-1 agreement with the original")
@click.option("--min-iia", type=float, help="min interchange-intervention accuracy")
@click.option("--keep", type=float, help="fraction of prunable units to keep")
@click.option("--criterion", default="curvature", show_default=True,
              type=click.Choice(["curvature", "layer", "variance", "magnitude", "random",
                                 "ablation"]))  # fmt: skip
@click.option("--no-fold", is_flag=True, help="constants only, no folding")
@click.option("--samples", type=int, help="use at most N calibration samples")
@click.option("--batch-size", default=256, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--swap-p", default=0.5, show_default=True, type=float,
              help="probability that an interchange intervention swaps each kept unit: the "
              "distribution fits, risk and IIA are made under; small values (0.05) favour "
              "fidelity on plain inputs")  # fmt: skip
@click.option("--align", type=int, help="keep multiples of N channels in convolutional layers "
              "(8: AVX2, 16: AVX-512; faster onnxruntime CPU kernels)")  # fmt: skip
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="write the report (.html or .json)")  # fmt: skip
@click.option("--output", "output_name", help="model output holding the logits (default: first)")
@click.option("--force", is_flag=True, help="allow OUT to overwrite IN")
@click.option("-q", "--quiet", is_flag=True)
@click.option("-v", "--verbose", is_flag=True, help="tracebacks on errors")
def compress(in_path, out_path, data, budget, min_fidelity, min_iia, keep, criterion, no_fold,
             samples, batch_size, device, seed, swap_p, align, report_path, output_name, force,
             quiet, verbose) -> None:  # fmt: skip
    """Find a sparse causal abstraction of IN and write it, compiled, to OUT."""
    bars = _Bars(quiet)
    try:
        rules = [r for r in (budget, min_fidelity, min_iia, keep) if r is not None]
        if len(rules) > 1:
            raise ScmoptError("give one of --budget, --min-fidelity, --min-iia, --keep")
        if not rules:
            min_fidelity = 0.99
        if Path(out_path).resolve() == Path(examples.resolve(in_path, "model")).resolve() and (
            not force
        ):
            raise ScmoptError("OUT is the same file as IN; refusing to overwrite it (--force)")
        if report_path and Path(report_path).suffix not in (".html", ".json"):
            raise ScmoptError("--report must end in .html or .json")
        if samples is not None and samples < 8:
            raise ScmoptError("--samples must be at least 8")
        if batch_size < 1:
            raise ScmoptError("--batch-size must be positive")
        from scmopt.api import compress as run

        in_path = examples.resolve(in_path, "model")
        data = examples.resolve(data, "data") if data is not None else None
        model = _select_output(graph.load(in_path), output_name)
        if data is None and not quiet:
            click.echo("scmopt: warning: no --data: statistics come from random inputs and are "
                       "not meaningful for a trained model", err=True)  # fmt: skip
        result = run(
            model, data, budget=budget, min_fidelity=min_fidelity, min_iia=min_iia, keep=keep,
            criterion=criterion, fold=not no_fold, samples=samples, batch_size=batch_size,
            device=device, seed=seed, progress=bars, align=align, swap_p=swap_p,
        )  # fmt: skip
        bars.close()
        result.report["input"], result.report["output"] = str(in_path), str(out_path)
        model_out = _restore_outputs(result.model, graph.load(in_path))
        graph.save(model_out, out_path)
        if report_path:
            _write_report(result, report_path)
        if not quiet:
            _summary(result.report, report_path, out_path)
    except Exception as exc:  # noqa: BLE001 - one-line errors for users
        bars.close()
        _fail(exc, verbose)


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


def _write_report(result, path: str) -> None:
    from scmopt.report import html as report

    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    if path.endswith(".json"):
        report.write_json(result.report, tmp)
    else:
        report.write_html(result.report, tmp, result.unit_graph)
    tmp.replace(path)


def _summary(rep: dict, report_path: str | None, out_path: str) -> None:
    u, fid = rep["units"], rep["fidelity"]
    rows = [
        ("units", f"{u['total']} total: {u['kept']} kept ({u['frozen']} frozen), "
                  f"{u['constant']} constant, {u['folded']} folded"),  # fmt: skip
        ("parameters", f"{rep['params']['before']:,} -> {rep['params']['after']:,} "
                       f"({rep['params']['after'] / max(rep['params']['before'], 1):.1%})"),
        ("FLOPs/sample", f"{rep['flops']['before']:,} -> {rep['flops']['after']:,} "
                         f"({rep['flops']['after'] / max(rep['flops']['before'], 1):.1%})"),
        ("risk", _num(fid.get("risk"))),
        ("fidelity", f"{_num(fid['agreement'])} (held-out n={fid['samples']}; certified "
                     f">= {_num(1 - fid['certificate']['bound'])})"),
        ("IIA", f"{_num(fid['iia'])} (p = {fid.get('iia_p', 0.5):g})"),
    ]  # fmt: skip
    if "accuracy" in rep:
        a = rep["accuracy"]
        rows.append(("accuracy", f"{a['before']:.4f} -> {a['after']:.4f}"))
    rows += [
        ("compile error", f"{rep['compile_max_abs_error']:.2e} (vs simulation)"),
        ("time", f"{rep['timing_s']['total']:.1f} s"),
        ("written", out_path + (f", report {report_path}" if report_path else "")),
    ]
    for note in rep.get("notes", []):
        rows.append(("note", note))
    width = max(len(k) for k, _ in rows)
    click.echo("")
    for k, v in rows:
        click.echo(f"  {k:<{width}}  {v}")


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


@main.command()
@click.argument("in_path", metavar="IN.onnx", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("-v", "--verbose", is_flag=True)
def inspect(in_path, as_json, verbose) -> None:
    """Print unit groups, frozen units with reasons, parameters and FLOPs."""
    try:
        from scmopt.units.analysis import analyze

        model = graph.load(examples.resolve(in_path, "model"))
        graph.check(model, "input model")
        ug = analyze(model)
        costs = cost.model_cost(ug.model)  # never raises: unknown shapes are listed
        info = {
            "params": costs.params,
            "flops": costs.flops,
            "flops_unknown": costs.unknown,
            **ug.summary(),
            "groups": [
                {
                    "id": g.id,
                    "units": len(g.units),
                    "cuts": g.cuts,
                    "producers": g.producers,
                    "consumers": g.consumers,
                    "frozen": sum(1 for u in g.units if not ug.units[u].prunable),
                }  # fmt: skip
                for g in ug.groups.values()
            ],
            "frozen_units": ug.frozen(),
        }
        if as_json:
            click.echo(json.dumps(info, indent=2))
            return
        click.echo(f"{in_path}: opset {graph.opset(model)}, {info['params']:,} parameters, "
                   f"{info['flops']:,} FLOPs/sample{costs.unknown_text()}")  # fmt: skip
        click.echo(f"units: {info['units']} total, {info['prunable']} prunable "
                   f"({info['prunable_fraction']:.1%}), {info['frozen']} frozen\n")  # fmt: skip
        for g in info["groups"]:
            click.echo(f"{g['id']}: {g['units']} units ({g['frozen']} frozen), "
                       f"{len(g['cuts'])} cut(s)")  # fmt: skip
            click.echo(f"    producers: {_short(g['producers'])}")
            click.echo(f"    consumers: {_short(g['consumers'])}")
            click.echo(f"    cuts:      {_short(g['cuts'])}")
        reasons: dict[str, int] = {}
        for r in info["frozen_units"].values():
            reasons[r] = reasons.get(r, 0) + 1
        if reasons:
            click.echo("\nfrozen units:")
            for r, n in sorted(reasons.items(), key=lambda x: -x[1]):
                click.echo(f"  {n:5d}  {r}")
    except Exception as exc:  # noqa: BLE001
        _fail(exc, verbose)


def _short(items: list[str], n: int = 4) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


@main.command(name="validate")
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("compressed", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path())
@click.option("--runs", default=20, show_default=True, help="latency repetitions")
@click.option("-v", "--verbose", is_flag=True)
def validate_cmd(original, compressed, data, runs, verbose) -> None:
    """Fidelity, accuracy, IIA, parameters, FLOPs and CPU latency of both models."""
    try:
        import numpy as np

        from scmopt.api import plan_from_model, prepare_data
        from scmopt.compiler.compile import compile_plan
        from scmopt.evaluation import validate
        from scmopt.units.analysis import analyze

        a = graph.load(examples.resolve(original, "model"))
        b = graph.load(compressed)
        data = examples.resolve(data, "data")
        graph.check(a, "original model")
        graph.check(b, "compressed model")
        if list(graph.input_specs(a)) != list(graph.input_specs(b)):
            raise ScmoptError("the models have different inputs")
        feeds, labels, _ = prepare_data(a, data)
        fa, fb = validate.logits(a, feeds), validate.logits(b, feeds)
        if fa.shape != fb.shape:
            raise ScmoptError(f"output shapes differ: {fa.shape} vs {fb.shape}")
        rows = [("samples", str(len(fa)), ""),
                ("parameters", f"{cost.count_params(a):,}", f"{cost.count_params(b):,}"),
                ("FLOPs/sample", f"{cost.count_flops(a):,}", f"{cost.count_flops(b):,}"),
                ("latency b=1 (ms)", f"{validate.latency_ms(a, feeds, 1, runs):.3f}",
                 f"{validate.latency_ms(b, feeds, 1, runs):.3f}"),
                ("fidelity", "", f"{validate.agreement(fa, fb):.4f}")]  # fmt: skip
        if labels is not None:
            acc = [float(np.mean(f.reshape(len(f), -1).argmax(1) == labels)) for f in (fa, fb)]
            rows.append(("accuracy", f"{acc[0]:.4f}", f"{acc[1]:.4f}"))
        plan = plan_from_model(b)
        if plan is not None:
            ug = analyze(a)
            kept = compile_plan(ug, plan).kept_positions
            iia = validate.artifact_iia(ug, plan, b, kept, feeds)
            rows.append(("IIA (mean over cuts)", "", f"{np.mean(list(iia.values())):.4f}"))
        else:
            rows.append(("IIA", "", "n/a (no scmopt plan in the model's metadata)"))
        click.echo(f"{'':22s}{'original':>16s}{'compressed':>16s}")
        for k, x, y in rows:
            click.echo(f"{k:22s}{x:>16s}{y:>16s}")
    except Exception as exc:  # noqa: BLE001
        _fail(exc, verbose)


if __name__ == "__main__":
    main()
