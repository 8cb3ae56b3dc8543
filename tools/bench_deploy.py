"""Section 4: deployment. Parameters, FLOPs (scmopt.cost) and onnxruntime CPU latency of the
original, the onnxslim-simplified original, scmopt's output at 95% fidelity, and scmopt's
output passed through onnxslim.

    python tools/bench_deploy.py
    python tools/bench_deploy.py --models cnn_digits --runs 100

Latency: onnxruntime CPUExecutionProvider, 1 intra-op thread (the machine has 2 shared cores),
batch 1, 64 and 1024 (1024: where even the small models are compute-bound), median of --runs
runs (default 50) interleaved across the models in 5 rounds after 5 warm-up runs, at
onnxruntime's default optimisation level (ORT_ENABLE_ALL, which on x86 rewrites convolutions to
the blocked NCHWc layout when channel counts are multiples of the SIMD block) and at
ORT_ENABLE_EXTENDED (same fusions, no layout change). Fidelity and accuracy on the test split.

An extra variant, "scmopt aligned<k>" (--align, default 16 = AVX-512 float block), is the same
plan through scmopt.align.align_plan (what `scmopt --align k` does): the highest-scoring removed
units of every convolutional cut are re-kept until its kept count is a multiple of k (the plan's
other replacements unchanged); it shows how much of the latency gap comes from the layout.
Writes benchmarks/deploy.{json,csv}; with --save also the models, to benchmarks/deploy_models/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

from scmopt.analysis.align import align_plan  # noqa: E402


def slim(model):
    import onnxslim

    return onnxslim.slim(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=B.ZOO)
    ap.add_argument("--min-fidelity", type=float, default=0.95)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 64, 1024])
    ap.add_argument("--align", type=int, default=16)
    ap.add_argument("--levels", nargs="*", default=["all", "extended"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--name", default="deploy")
    args = ap.parse_args()

    rows = []
    for name in args.models:
        test, y = B.split(name, "test")
        original = B.load_model(name)
        res, secs, kept = B.run_scmopt(str(B.model_path(name)), str(B.calib_path(name)),
                                       min_fidelity=args.min_fidelity, seed=args.seed)  # fmt: skip
        import scmopt

        aligned = scmopt.compile(
            res.unit_graph, align_plan(res.unit_graph, res.plan, res.report["scores"], args.align)
        )
        variants = {
            "original": original,
            "onnxslim(original)": slim(original),
            "scmopt": res.model,
            "onnxslim(scmopt)": slim(res.model),
            f"scmopt aligned{args.align}": aligned,
        }
        if args.save:
            d = B.OUT / "deploy_models"
            d.mkdir(parents=True, exist_ok=True)
            for k, m in variants.items():
                B.graph.save(m, d / f"{name}__{k.replace('(', '_').replace(')', '')}.onnx")
        lat = {(lv, b): B.latency_ms(variants, test, b, runs=args.runs, threads=args.threads,
                                     level=lv)
               for lv in args.levels for b in args.batches}  # fmt: skip
        for k, m in variants.items():
            ev = B.judge(res.unit_graph, m, test, y, None, interventions=False)
            row = {"model": name, "variant": k, "units": ev["units"], "params": ev["params"],
                   "flops": ev["flops"], "nodes": len(m.graph.node),
                   "test_agreement": ev["agreement"], "test_accuracy": ev["accuracy"],
                   "scmopt_seconds": secs if "scmopt" in k else None,
                   "calib_agreement": res.report["fidelity"]
                   if k == "scmopt" else None}  # fmt: skip
            for (lv, b), v in lat.items():
                row[f"{lv}_b{b}_ms"] = v[k]["median_ms"]
                row[f"{lv}_b{b}_p10_ms"] = v[k]["p10_ms"]
                row[f"{lv}_b{b}_p90_ms"] = v[k]["p90_ms"]
            rows.append(row)
        base = rows[-len(variants)]
        for r in rows[-len(variants) :]:
            r["flop_reduction"] = base["flops"] / r["flops"]
            r["param_reduction"] = base["params"] / r["params"]
            for lv, b in lat:
                sp = base[f"{lv}_b{b}_ms"] / r[f"{lv}_b{b}_ms"]
                r[f"{lv}_b{b}_speedup"] = sp
                r[f"{lv}_b{b}_speedup_over_flop_reduction"] = sp / r["flop_reduction"]
            lats = " ".join(f"{lv}/b{b} {r[f'{lv}_b{b}_ms']:.4f}" for lv, b in lat)
            B.log(
                f"{name:14s} {r['variant']:20s} units {r['units']:4d} params {r['params']:7d} "
                f"flops {r['flops']:9d} agree {r['test_agreement']:.3f} ms: {lats}"
            )
        B.write_results(args.name, rows, vars(args))


if __name__ == "__main__":
    main()
