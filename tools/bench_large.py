"""Section 10: an ImageNet-size network (time and memory only).

    python tools/bench_large.py
    python tools/bench_large.py --models squeezenet --samples 32 --keep 0.5

The onnx package ships "light" copies of classic ImageNet models whose weights are placeholders;
tests/light.py gives them seeded random weights (fan-in scaled). With random weights the outputs
barely vary, so fidelity and risk say nothing here: this section only measures whether the
whole `scmopt.compress` (search, compile, validation on the artifact) runs through, in how long
and in how much memory. Inputs are standard-normal images. Each run is a fresh subprocess that
reports its wall time, the analysis stages and its peak RSS (getrusage high-water mark, which
here is set by the analysis, gigabytes above the imports). Writes benchmarks/large.{json,csv}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def child(name: str, samples: int, keep: float) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from light import light_model

    import scmopt
    from scmopt.units.analysis import analyze

    model = light_model(name)
    ug = analyze(model)
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal([samples, *shape[1:]]).astype(np.float32)
    t0 = time.perf_counter()
    res = scmopt.compress(model, {inp.name: x}, keep=keep, seed=0)
    wall = time.perf_counter() - t0
    rep = res.report
    return {
        "model": name, "samples": samples, "keep": keep, "input_shape": shape,
        "units": len(ug.units), "prunable": len(ug.prunable), "cuts": len(ug.cuts),
        "kept": rep["units"]["kept"], "wall_s": wall, "timing": rep["timing_s"],
        "params_before": rep["params"]["before"], "params_after": rep["params"]["after"],
        "flops_before": rep["flops"]["before"], "flops_after": rep["flops"]["after"],
        "compile_error": rep["compile_max_abs_error"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["squeezenet"])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.models[0], args.samples, args.keep), default=float))
        return
    rows = []
    for name in args.models:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--models", name, "--samples",
             str(args.samples), "--keep", str(args.keep)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        row = json.loads(out.stdout.strip().splitlines()[-1])
        s = row["timing"]["search"]
        B.log(f"{name}: {row['units']} units, {row['samples']} samples, keep {row['keep']}: "
              f"{row['wall_s']:.0f} s (curvature {s['curvature']:.0f}, selection "
              f"{s['selection']:.0f}), peak RSS {row['peak_rss_mb']:.0f} MB")  # fmt: skip
        rows.append(row)
        B.write_results("large", rows, {"samples": args.samples, "keep": args.keep})


if __name__ == "__main__":
    main()
