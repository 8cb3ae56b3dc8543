"""TorchScript export (``dynamo=False``, opset 17, dynamic batch) and the onnxruntime check."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from models.export import normalize

OPSET = 17
INPUT = "input"
BATCH = "batch"


def export(model: nn.Module, example: torch.Tensor, outputs: list[str]) -> onnx.ModelProto:
    buf = io.BytesIO()
    axes = {n: {0: BATCH} for n in [INPUT, *outputs]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in torch 2.9+
        torch.onnx.export(
            model.eval(),
            (example,),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=outputs,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return normalize(onnx.load_from_string(buf.getvalue()))


def torch_outputs(model: nn.Module, x: np.ndarray, batch: int = 32) -> list[np.ndarray]:
    """The model's outputs on x (numpy, in batches)."""
    parts: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            y = model(torch.from_numpy(x[i : i + batch]))
            parts.append([t.numpy() for t in (y if isinstance(y, tuple) else (y,))])
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def ort_outputs(model: onnx.ModelProto, x: np.ndarray, batch: int = 32) -> list[np.ndarray]:
    """The ONNX model's outputs on x with onnxruntime (CPU), in batches."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    parts = [sess.run(None, {INPUT: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def check(model: onnx.ModelProto, torch_out: list[np.ndarray], x: np.ndarray) -> dict:
    """Full ONNX check, then onnxruntime (CPU) against torch: max abs diff per output, and that
    diff relative to the output's largest magnitude."""
    onnx.checker.check_model(model, full_check=True)
    got = ort_outputs(model, x)
    names = [o.name for o in model.graph.output]
    diffs = {n: float(np.max(np.abs(g - t))) for n, g, t in zip(names, got, torch_out, strict=True)}
    scale = {n: float(np.max(np.abs(t))) for n, t in zip(names, torch_out, strict=True)}
    return {
        "samples": len(x),
        "max_abs_diff": diffs,
        "max_rel_diff": {n: diffs[n] / max(scale[n], 1e-12) for n in names},
    }
