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
SEQ = "seq"


Example = torch.Tensor | tuple[torch.Tensor, ...]


def _names_and_axes(
    example: Example, input_names: tuple[str, ...] | None, seq_axis: bool
) -> tuple[tuple[torch.Tensor, ...], list[str], dict[int, str]]:
    args = example if isinstance(example, tuple) else (example,)
    names = list(input_names or (INPUT_NAME,))
    assert len(names) == len(args), (names, len(args))
    axes = {0: BATCH, 1: SEQ} if seq_axis else {0: BATCH}
    return args, names, axes


def export_torchscript(
    model: nn.Module,
    example: Example,
    opset: int = TORCHSCRIPT_OPSET,
    input_names: tuple[str, ...] | None = None,
    seq_axis: bool = False,
) -> onnx.ModelProto:
    """TorchScript exporter (``dynamo=False``), opset 17 by default, dynamic batch axis.

    ``example`` is one tensor or a tuple of them (one per input, named ``input_names``);
    ``seq_axis`` makes axis 1 of every input dynamic too (``seq``).
    """
    args, names, axes = _names_and_axes(example, input_names, seq_axis)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in torch 2.9+
        torch.onnx.export(
            model.eval(),
            args,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes={**{n: dict(axes) for n in names}, OUTPUT_NAME: {0: BATCH}},
            do_constant_folding=True,
        )
    return normalize(onnx.load_from_string(buf.getvalue()))


def export_dynamo(
    model: nn.Module,
    example: Example,
    tmp: Path,
    opset: int | None = None,
    input_names: tuple[str, ...] | None = None,
    seq_axis: bool = False,
    max_seq: int | None = None,
) -> onnx.ModelProto:
    """torch.export-based exporter (``dynamo=True``): default opset unless ``opset`` is given,
    dynamic batch (and axis 1 up to ``max_seq`` with ``seq_axis``), inline data."""
    args, names, axes = _names_and_axes(example, input_names, seq_axis)
    dims = {0: torch.export.Dim(BATCH, min=1, max=1 << 20)}
    if seq_axis:
        dims[1] = torch.export.Dim(SEQ, min=2, max=max_seq or 1 << 16)
    extra = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(),
            args,
            dynamo=True,
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_shapes=tuple(dict(dims) for _ in args),
            optimize=True,
            verbose=False,
            **extra,
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


def _feeds(x: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(x) if isinstance(x, dict) else {INPUT_NAME: x}


def ort_logits(model: onnx.ModelProto, x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    """Run the model on CPU with onnxruntime; returns the single ``logits`` output.

    ``x``: the array of the single input ``input``, or arrays keyed by input name."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT_NAME], _feeds(x))[0]


def check_against_torch(
    model: onnx.ModelProto,
    torch_logits: np.ndarray,
    x: np.ndarray | dict[str, np.ndarray],
    atol: float = 1e-4,
) -> float:
    """Full ONNX check + onnxruntime reproduces the torch logits; returns the max abs diff."""
    onnx.checker.check_model(model, full_check=True)
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    if names_in != list(_feeds(x)) or names_out != [OUTPUT_NAME]:
        raise AssertionError(f"unexpected I/O names {names_in} -> {names_out}")
    got = ort_logits(model, x)
    diff = float(np.max(np.abs(got - torch_logits)))
    if not diff < atol:
        raise AssertionError(f"onnxruntime differs from torch by {diff:.3g} (>= {atol})")
    return diff
