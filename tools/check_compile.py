"""Compiler acceptance table: keep-all and random half plans on the zoo and the light models.

    python tools/check_compile.py [names...]

For each model: max |compiled - original| (keep-all) and |compiled - simulation| (random plan
removing half the prunable units, constants and folds), both relative to the output scale;
parameters and FLOPs before/after; the full ONNX checker.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import outputs, relative_error, zoo  # noqa: E402
from light import NAMES, light_input, light_model  # noqa: E402
from plans import random_plan  # noqa: E402

from models import load_manifest  # noqa: E402
from scmopt import units  # noqa: E402
from scmopt.compiler.compile import compile_plan  # noqa: E402
from scmopt.ops import cost  # noqa: E402
from scmopt.plan import Plan  # noqa: E402
from scmopt.runtime import hooks as intervene  # noqa: E402


def cases(names: list[str]):
    for e in load_manifest():
        if not names or e["name"] in names:
            yield e["name"], lambda n=e["name"]: zoo(n, n=64)
    for n in NAMES:
        if not names or n in names:
            yield n, lambda n=n: (lambda m: (m, light_input(m)))(light_model(n))


def main() -> None:
    print("| model | prunable | keep-all err | plan err | params before → after "
          "| FLOPs before → after | checker | s |")  # fmt: skip
    print("|---|---:|---:|---:|---|---|---|---:|")
    for name, load in cases(sys.argv[1:]):
        t0 = time.perf_counter()
        model, feeds = load()
        ug = units.analyze(model)
        ref = outputs(model, feeds)
        keep_all = relative_error(outputs(compile_plan(ug, Plan()).model, feeds), ref)
        plan = random_plan(ug, 0.5, seed=1, per_position_prob=0.0)
        compiled = compile_plan(ug, plan).model
        err = relative_error(outputs(compiled, feeds), outputs(intervene.simulate(ug, plan), feeds))
        try:
            onnx.checker.check_model(compiled, full_check=True)
            ok = "pass"
        except Exception as exc:  # noqa: BLE001
            ok = f"FAIL {exc}"
        print(
            f"| {name} | {ug.summary()['prunable_fraction']:.3f} | {keep_all:.1e} | {err:.1e} | "
            f"{cost.count_params(ug.model):,} → {cost.count_params(compiled):,} | "
            f"{cost.count_flops(ug.model):,} → {cost.count_flops(compiled):,} | {ok} | "
            f"{time.perf_counter() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
