"""Export trained zoo models to ONNX with both torch exporters, deterministically."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

__all__ = [
    "TORCHSCRIPT_OPSET",
    "export_torchscript",
    "export_dynamo",
    "normalize",
    "check_against_torch",
    "ort_logits",
]

TORCHSCRIPT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH = "batch"


def export_torchscript(model: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """TorchScript exporter (``dynamo=False``), opset 17, dynamic batch axis."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in torch 2.9+
        torch.onnx.export(
            model.eval(),
            (example,),
            buf,
            dynamo=False,
            opset_version=TORCHSCRIPT_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH}, OUTPUT_NAME: {0: BATCH}},
            do_constant_folding=True,
        )
    return normalize(onnx.load_from_string(buf.getvalue()))


def export_dynamo(model: nn.Module, example: torch.Tensor, tmp: Path) -> onnx.ModelProto:
    """torch.export-based exporter (``dynamo=True``): default opset, dynamic batch, inline data."""
    batch = torch.export.Dim(BATCH, min=1, max=1 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(),
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            optimize=True,
            verbose=False,
        )
    assert program is not None
    path = tmp / "dynamo_tmp.onnx"
    program.save(path, external_data=False)
    model_proto = onnx.load(path, load_external_data=False)
    path.unlink()
    for t in model_proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"dynamo export kept {t.name!r} as external data")
    return normalize(model_proto)


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop machine-dependent metadata (source paths, stack traces) so the bytes are reproducible.

    The dynamo exporter records a stack trace, module class hierarchy and source file paths per
    node and value in ``metadata_props``/``doc_string``; these depend on where the repo is checked
    out, not on the model, so they are removed. The model-level producer name/version stay.
    """
    graphs = [model.graph]
    graphs += [f for f in model.functions]  # type: ignore[misc]
    for g in graphs:
        nodes = g.node
        for node in nodes:
            del node.metadata_props[:]
            node.doc_string = ""
        if isinstance(g, onnx.GraphProto):
            del g.metadata_props[:]
            g.doc_string = ""
            for vi in [*g.input, *g.output, *g.value_info]:
                del vi.metadata_props[:]
                vi.doc_string = ""
            for t in g.initializer:
                del t.metadata_props[:]
                t.doc_string = ""
    del model.metadata_props[:]
    model.doc_string = ""
    return model


def ort_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run the model on CPU with onnxruntime; returns the single ``logits`` output."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def check_against_torch(
    model: onnx.ModelProto, torch_logits: np.ndarray, x: np.ndarray, atol: float = 1e-4
) -> float:
    """Full ONNX check + onnxruntime reproduces the torch logits; returns the max abs diff."""
    onnx.checker.check_model(model, full_check=True)
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    if names_in != [INPUT_NAME] or names_out != [OUTPUT_NAME]:
        raise AssertionError(f"unexpected I/O names {names_in} -> {names_out}")
    got = ort_logits(model, x)
    diff = float(np.max(np.abs(got - torch_logits)))
    if not diff < atol:
        raise AssertionError(f"onnxruntime differs from torch by {diff:.3g} (>= {atol})")
    return diff
