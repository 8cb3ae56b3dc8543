"""Prints the fraction of prunable (not frozen) units per model: zoo + ONNX light models.

python tools/prunable_fraction.py
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from light import NAMES, light_model  # noqa: E402

from models import load_manifest, model_path  # noqa: E402
from scmopt import units  # noqa: E402
from scmopt.io import graph  # noqa: E402


def main() -> None:
    rows = []
    cases = [(e["name"], lambda n=e["name"]: graph.load(model_path(n))) for e in load_manifest()]
    cases += [(f"light_{n}", lambda n=n: light_model(n)) for n in NAMES]
    print("| model | units | prunable | fraction | main frozen reason | analysis s |")
    print("|---|---:|---:|---:|---|---:|")
    for name, load in cases:
        model = load()
        t0 = time.perf_counter()
        ug = units.analyze(model)
        dt = time.perf_counter() - t0
        s = ug.summary()
        top = Counter(ug.frozen().values()).most_common(1)
        reason = f"{top[0][1]}: {top[0][0]}" if top else ""
        rows.append((name, s))
        print(f"| {name} | {s['units']} | {s['prunable']} | {s['prunable_fraction']:.3f} | "
              f"{reason} | {dt:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
