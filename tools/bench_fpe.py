"""The work of a whole `compress`, in forward-pass equivalents (FPE) by stage (issue 13).

    python tools/bench_fpe.py                       # the zoo, keep 0.3 and --min-fidelity 0.99
    python tools/bench_fpe.py --models cnn_digits --rules keep=0.3

One FPE is one pass of the model over the calibration set (runtime/work.py). Goals on this
2-core machine: <= 30 FPE at a fixed keep ratio, <= 60 FPE under a fidelity target, roughly
independent of the number of units. Writes benchmarks/fpe.{json,csv} and prints a markdown
table (FPE total and per stage, units, wall time, fidelity on the validation split).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

ZOO = B.ZOO + ["vit_digits", "text_encoder"]
STAGES = ("setup", "statistics", "curvature probes", "selection", "held-out checks", "compile",
          "validation")  # fmt: skip


def rule(text: str) -> dict:
    name, _, value = text.partition("=")
    return {name.replace("-", "_"): float(value)}


def run(name: str, rules: dict) -> dict:
    from scmopt import api

    t0 = time.perf_counter()
    res = api.compress(str(B.model_path(name)), str(B.calib_path(name)), device="cpu", **rules)
    work = res.report["work"]
    row = {
        "model": name,
        "rule": ", ".join(f"{k}={v:g}" for k, v in rules.items()),
        "units": res.report["units"]["total"],
        "kept": res.report["units"]["kept"],
        "samples": work["samples"],
        "fpe": work["total"],
        **{s: work["by_stage"].get(s, 0.0) for s in STAGES},
        "fidelity": res.report["fidelity"],
        "flops_ratio": res.report["flops"]["after"] / max(res.report["flops"]["before"], 1),
        "seconds": time.perf_counter() - t0,
    }
    B.log(f"{name} {row['rule']}: {row['fpe']:.1f} FPE, {row['seconds']:.1f} s")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=ZOO)
    ap.add_argument("--rules", nargs="*", default=["keep=0.3", "min-fidelity=0.99"])
    args = ap.parse_args()
    rows = [run(m, rule(r)) for r in args.rules for m in args.models]
    B.write_results("fpe", rows, {"machine": B.machine()})
    cols = [("model", "model"), ("rule", "rule"), ("units", "units"), ("kept", "kept"),
            ("fpe", "FPE"), *((s, s) for s in STAGES), ("fidelity", "fidelity"),
            ("flops_ratio", "FLOPs"), ("seconds", "s")]  # fmt: skip
    print(B.md_table(rows, cols, nd=2))


if __name__ == "__main__":
    main()
