"""Swap probability of the interventional distribution: fidelity vs interventional faithfulness.

    python tools/bench_swap_p.py
    python tools/bench_swap_p.py --models resnet_digits --ratios 0.3 --seeds 0 1

`compress(swap_p=p)` (CLI `--swap-p`) sets the p of DESIGN §2's family I: the probability that
an interchange swaps each kept unit. Statistics, constants, folds and the search's held-out risk
are all made under it. Here each zoo model is compressed at keep ratios with p = 0.5 (DESIGN's
default), 0.2 and 0.05, over several seeds (each seed draws its own calibration split and
swaps), and every compiled plan is evaluated on the test split at p = 0.5 by
tools/benchlib.judge: fidelity, plain-input risk, IIA and the interventional risk. Writes
benchmarks/swap_p.{json,csv}; rows per run, and per (model, keep, p) the median and min over
seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

PS = [0.5, 0.2, 0.05]
METRICS = ("test_agreement", "test_risk_plain", "test_iia", "test_risk")


def run_one(name: str, keep: float, p: float, seed: int, test, y) -> dict:
    res, secs, kept = B.run_scmopt(str(B.model_path(name)), str(B.calib_path(name)), keep=keep,
                                   seed=seed, swap_p=p)  # fmt: skip
    ev = B.judge(res.unit_graph, res.model, test, y, kept, seed=seed)
    row = {"model": name, "keep": keep, "swap_p": p, "seed": seed, "units": ev["units"],
           "seconds": secs, "test_agreement": ev["agreement"],
           "test_risk_plain": ev["risk_plain"], "test_iia": ev["iia"], "test_risk": ev["risk"],
           "calib_risk": res.report["validation"].get("risk")}  # fmt: skip
    B.log(f"{name:14s} keep {keep:.2f} p {p:<4} seed {seed}: units {ev['units']} fidelity "
          f"{ev['agreement']:.3f} plain risk {ev['risk_plain']:.3f} IIA {ev['iia']:.3f} risk "
          f"{ev['risk']:.3f} ({secs:.1f}s)")  # fmt: skip
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Median and min over seeds per (model, keep, p)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["keep"], r["swap_p"]), []).append(r)
    out = []
    for (model, keep, p), rs in groups.items():
        s = {"model": model, "keep": keep, "swap_p": p, "seeds": len(rs), "units": rs[0]["units"]}
        for m in METRICS:
            vals = [r[m] for r in rs]
            s[f"{m}_median"] = statistics.median(vals)
            s[f"{m}_min"] = min(vals)
            s[f"{m}_max"] = max(vals)
        out.append(s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=B.ZOO)
    ap.add_argument("--ratios", nargs="*", type=float, default=[0.5, 0.3])
    ap.add_argument("--ps", nargs="*", type=float, default=PS)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3])
    args = ap.parse_args()
    rows = []
    for name in args.models:
        test, y = B.split(name, "test")
        for keep in args.ratios:
            for p in args.ps:
                for seed in args.seeds:
                    rows.append(run_one(name, keep, p, seed, test, y))
        meta = {"ratios": args.ratios, "ps": args.ps, "seeds": args.seeds,
                "summary": summarise(rows)}  # fmt: skip
        B.write_results("swap_p", rows, meta)


if __name__ == "__main__":
    main()
