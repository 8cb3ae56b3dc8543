"""Command line: `scmopt IN OUT` (= `scmopt compress IN OUT`), `inspect`, `validate`.

Pieces: compress (checks, search, compile, write), checks (made before any work), planfile
(OUT.plan.json, `--plan`), progress (bars or plain lines on stderr), common (one-line errors).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from scmopt import examples
from scmopt.cli.common import fail as _fail
from scmopt.cli.compress import compress
from scmopt.errors import ScmoptError
from scmopt.io import graph
from scmopt.ops import cost

COMMANDS = ("compress", "inspect", "validate")


class DefaultGroup(click.Group):
    """Runs `compress` when the first argument is not a sub-command; usage errors are one
    line (`scmopt: error: ...`, exit 2) like every other error."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compress", *args]
        return super().parse_args(ctx, args)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("standalone_mode", None)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `scmopt`: the help
                exc.show()
                sys.exit(exc.exit_code)
            hint = f" (see {exc.ctx.command_path} -h)" if exc.ctx is not None else ""
            click.echo(f"scmopt: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("scmopt: aborted", err=True)
            sys.exit(1)
        except BrokenPipeError:
            _fail(BrokenPipeError(), False)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scmopt")
def main() -> None:
    """Compile a trained ONNX network into a sparse approximate causal abstraction.

    `scmopt IN.onnx OUT.onnx --data calib.npz` is short for `scmopt compress ...`.
    """


main.add_command(compress)

KIND_NAMES = {
    "channel": "conv channels",
    "neuron": "dense neurons",
    "token": "token features (FFN neurons, hidden channels)",
    "head": "attention heads",
}


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
            # the file's own parameters: canonicalisation folds constant subgraphs (a compiled
            # model's run-time border maps) into larger initializers than the file stores
            "params": cost.count_params(model),
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
            "unit_kinds": {u.id: u.kind for u in ug.units.values()},
            "rewrites": graph.rewrites_of(ug.model),
        }
        if as_json:
            click.echo(json.dumps(info, indent=2))
            return
        click.echo(f"{in_path}: opset {graph.opset(model)}, {info['params']:,} parameters, "
                   f"{info['flops']:,} FLOPs/sample{costs.unknown_text()}")  # fmt: skip
        if info["rewrites"]:  # what canonicalisation rewrote so that units can be found
            done = ", ".join(f"{k} {v}" for k, v in info["rewrites"].items())
            click.echo(f"load-time rewrites (same function; scmopt/io/rewrites): {done}")
        click.echo(f"units: {info['units']} total, {info['prunable']} prunable "
                   f"({info['prunable_fraction']:.1%}), {info['frozen']} frozen\n")  # fmt: skip
        for g in info["groups"]:
            click.echo(f"{g['id']}: {g['units']} units ({g['frozen']} frozen), "
                       f"{len(g['cuts'])} cut(s)")  # fmt: skip
            click.echo(f"    producers: {_short(g['producers'])}")
            click.echo(f"    consumers: {_short(g['consumers'])}")
            click.echo(f"    cuts:      {_short(g['cuts'])}")
        kinds: dict[str, list[int]] = {}
        for u in ug.units.values():
            k = kinds.setdefault(u.kind, [0, 0])
            k[0] += 1
            k[1] += u.prunable
        if set(kinds) - {"channel", "neuron"}:
            click.echo("\nunit kinds:")
            for kind, (total, pr) in sorted(kinds.items()):
                click.echo(f"  {KIND_NAMES[kind]}: {total} ({pr} prunable)")
            if "head" in kinds:
                click.echo("  a head spans its channels of Q, K, V and of the merged context; "
                           "Q/K channels inside a head are never sliced on their own (softmax "
                           "is not linear)")  # fmt: skip
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
@click.option("--runs", default=20, show_default=True, type=click.IntRange(min=1),
              help="latency repetitions")  # fmt: skip
@click.option(
    "--metric",
    help="agreement for the output (see `scmopt --help`; default: the "
    "one the compressed model was made with, else chosen from the output's shape)",
)
@click.option("-v", "--verbose", is_flag=True)
def validate_cmd(original, compressed, data, runs, metric, verbose) -> None:
    """Fidelity, accuracy, IIA, parameters, FLOPs and CPU latency of both models."""
    try:
        from scmopt.api import metric_from_model, plan_from_model, prepare_data, resolve_metric
        from scmopt.compiler.compile import compile_plan
        from scmopt.evaluation import validate
        from scmopt.units.analysis import analyze

        paths = [examples.resolve(p, "model") for p in (original, compressed)]
        a, b = (graph.load(p) for p in paths)
        data = examples.resolve(data, "data")
        if Path(paths[0]).resolve() == Path(paths[1]).resolve():
            click.echo("scmopt: warning: ORIGINAL and COMPRESSED are the same file", err=True)
        graph.check(a, "original model")
        graph.check(b, "compressed model")
        if list(graph.input_specs(a)) != list(graph.input_specs(b)):
            raise ScmoptError("the models have different inputs")
        feeds, labels, _ = prepare_data(a, data)
        one = {k: v[:1] for k, v in feeds.items()}
        fa, fb = validate.logits(a, one), validate.logits(b, one)
        if fa.shape != fb.shape:
            raise ScmoptError(f"output shapes differ: {fa.shape[1:]} vs {fb.shape[1:]}")
        chosen, metric_line = resolve_metric(a, feeds, metric or metric_from_model(b))
        click.echo(f"scmopt: {metric_line}", err=True)
        ug, plan = analyze(a), plan_from_model(b)
        kept = compile_plan(ug, plan).kept_positions if plan is not None else None
        m = validate.evaluate_artifact(ug, b, kept, feeds, labels, interventions=plan is not None,
                                       metric=chosen)  # fmt: skip
        rows = [("samples", str(m.n), ""),
                ("parameters", f"{cost.count_params(a):,}", f"{cost.count_params(b):,}"),
                ("FLOPs/sample", f"{cost.count_flops(a):,}", f"{cost.count_flops(b):,}"),
                ("latency b=1 (ms)", f"{validate.latency_ms(a, feeds, 1, runs):.3f}",
                 f"{validate.latency_ms(b, feeds, 1, runs):.3f}"),
                (f"fidelity ({m.metric})", "", f"{m.fidelity:.4f}"),
                ("risk (plain inputs)", "", f"{m.risk_plain:.4g}")]  # fmt: skip
        for o in validate.other_outputs(a, b, feeds):
            rows.append((f"{o['output']} ({o['metric']})"[:21], "", f"{o['agreement']:.4f}"))
        if m.accuracy is not None:
            rows.append(("accuracy", f"{m.accuracy_original:.4f}", f"{m.accuracy:.4f}"))
        if m.iia is not None:
            rows.append(("risk (interventional)", "", f"{m.risk:.4g}"))
            rows.append(("IIA (mean over cuts)", "", f"{m.iia:.4f}"))
        else:
            rows.append(("IIA", "", "n/a (no scmopt plan in the model's metadata)"))
        click.echo(f"{'':22s}{'original':>16s}{'compressed':>16s}")
        for k, x, y in rows:
            click.echo(f"{k:22s}{x:>16s}{y:>16s}")
    except Exception as exc:  # noqa: BLE001
        _fail(exc, verbose)
