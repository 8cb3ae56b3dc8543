"""Numerical comparison helpers shared by the compiler tests."""

from __future__ import annotations

import numpy as np
import onnx

from models import load_split, model_path
from scmopt import graph, runtime


def outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return runtime.session(model, device="cpu").run(None, feeds)


def relative_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Max abs difference over all outputs, relative to the reference output scale."""
    return max(
        float(np.abs(x - y).max() / (np.abs(y).max() + 1e-12)) for x, y in zip(a, b, strict=True)
    )


def zoo(name: str, n: int = 64) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    data = load_split(name, "calib")
    feeds = {k: v[:n] for k, v in data.items() if k != "y"}
    return graph.load(model_path(name)), feeds


def io_signature(model: onnx.ModelProto) -> list[tuple[str, str]]:
    inits = {i.name for i in model.graph.initializer}
    ios = [i for i in model.graph.input if i.name not in inits] + list(model.graph.output)
    return [(vi.name, str(vi.type).replace("\n", " ")) for vi in ios]
