"""Tensor shapes of a model for one sample: static inference, then one onnxruntime run.

`resolve_shapes` never raises on a model it can read: onnx shape inference (with data
propagation) gives what it can; every tensor still not fully known is then exposed as an extra
graph output of ONE onnxruntime run on one sample, which gives its real shape. What neither can
know (an op onnxruntime cannot run, a custom domain, a data-dependent shape on a synthesized
sample) stays None, with the reason in `Shapes.note`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["Shape", "Shapes", "resolve_shapes", "sample_feeds"]

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class Shapes:
    """Shapes of the main graph's tensors for one sample.

    `dims` maps a tensor name to its shape, None per dimension that is not known (a tensor
    absent from `dims` has no known rank). `measured` names the tensors whose shape came from
    the onnxruntime run; `note` says why that run did not happen or failed (None otherwise).
    """

    dims: dict[str, Shape]
    measured: frozenset[str] = frozenset()
    note: str | None = None
    feeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # input -> shape used

    def get(self, name: str) -> Shape | None:
        return self.dims.get(name)

    def known(self, name: str) -> bool:
        """True when every dimension of `name` is known."""
        shape = self.dims.get(name)
        return shape is not None and all(d is not None for d in shape)


def _input_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def sample_feeds(
    model: onnx.ModelProto, sample: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray] | None:
    """One sample for every graph input, or None when one cannot be made.

    A given array is cut to one sample along axis 0 unless the model fixes that axis (then
    the first `d0` samples are used) and cast to the input's dtype; an input missing from
    `sample` (or with fewer than `d0` samples) is synthesized as zeros of its dtype with
    symbolic or unknown dimensions set to 1. None when an input is not a tensor, or has no
    shape or type and no array was given for it.
    """
    sample = sample or {}
    feeds: dict[str, np.ndarray] = {}
    for vi in _input_infos(model):
        if not vi.type.HasField("tensor_type"):
            return None
        tt = vi.type.tensor_type
        fixed = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        x = np.asarray(sample[vi.name]) if vi.name in sample else None
        first = fixed[0] if fixed and fixed[0] else 1
        typed = tt.elem_type != TensorProto.UNDEFINED
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type) if typed else None
        if x is not None and (x.ndim == 0 or len(x) >= first):
            x = x[:first] if x.ndim else x
            feeds[vi.name] = x.astype(dtype) if dtype is not None else x
            continue
        if not tt.HasField("shape") or dtype is None:
            return None
        feeds[vi.name] = np.zeros([d if d else 1 for d in fixed], dtype)
    return feeds


def _fixed_inputs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray] | None):
    """Copy of `model` whose input dims are those of `feeds` (symbolic/unknown ones 1 without
    feeds) and whose recorded intermediate and output shapes are dropped (they may carry a
    symbolic batch); the function computed is unchanged."""
    m = copy.deepcopy(model)
    for vi in _input_infos(m):
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if feeds is not None and vi.name in feeds:
            tt.ClearField("shape")
            tt.shape.SetInParent()
            for d in feeds[vi.name].shape:
                tt.shape.dim.add().dim_value = int(d)
            continue
        for d in tt.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = 1
    del m.graph.value_info[:]
    for out in m.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    return m


def _static(model: onnx.ModelProto) -> tuple[dict[str, Shape], str | None]:
    """Shapes onnx inference gives (data propagation on); constants and initializers exact."""
    note = None
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, data_prop=True)
    except Exception as exc:  # inference errors come in several types
        inferred, note = model, f"onnx shape inference failed ({type(exc).__name__})"
    g = inferred.graph
    shapes: dict[str, Shape] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or not tt.HasField("shape"):
            continue
        dims = tt.shape.dim
        shapes[vi.name] = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in dims
        )
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes, note


def _measure(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str], device: str
) -> tuple[dict[str, Shape], str | None]:
    """Real shapes of `names` from one onnxruntime run; ({}, reason) when it cannot run.
    `model` (a private copy) gets them as extra outputs."""
    from scmopt.runtime.sessions import session

    m = model
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    try:
        outs = session(m, device, spinning=False, arena=False).run(
            [o.name for o in m.graph.output], feeds
        )
    except Exception as exc:  # onnxruntime raises several types (load, kernel, shape errors)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {}, f"onnxruntime could not run the model: {first[:200]}"
    measured = {}
    for o, value in zip(m.graph.output, outs, strict=True):
        if o.name in names and isinstance(value, np.ndarray):
            measured[o.name] = tuple(int(d) for d in value.shape)
    return measured, None


def resolve_shapes(
    model: onnx.ModelProto,
    sample: Mapping[str, np.ndarray] | None = None,
    names: Iterable[str] | None = None,
    device: str = "auto",
) -> Shapes:
    """Shapes of the main graph's tensors for one sample; never raises.

    Static onnx inference runs with the input dims of one sample (`sample` cut to one sample,
    or symbolic/unknown dims set to 1). For the tensors among `names` (default: every node
    output of the main graph) whose shape is still not fully known, one onnxruntime run on
    that sample (given, or zeros synthesized from the input specs) exposes them as extra
    outputs and records their real shapes. If the run is impossible or fails, the static
    shapes are returned as they are and `note` says why. `model` is not modified.
    """
    feeds = sample_feeds(model, sample)
    fixed = _fixed_inputs(model, feeds)
    dims, note = _static(fixed)
    if names is None:
        names = [o for n in model.graph.node for o in n.output if o]
    produced = {o for n in model.graph.node for o in n.output if o}
    missing = []
    for name in dict.fromkeys(names):
        shape = dims.get(name)
        if name in produced and (shape is None or any(d is None for d in shape)):
            missing.append(name)
    used = {k: tuple(v.shape) for k, v in (feeds or {}).items()}
    if not missing:
        return Shapes(dims, frozenset(), note, used)
    if feeds is None:
        reason = "no sample could be made for the inputs (an input without shape or type)"
        return Shapes(dims, frozenset(), note or reason, used)
    measured, failure = _measure(fixed, feeds, missing, device)
    dims.update(measured)
    return Shapes(dims, frozenset(measured), note or failure, used)
