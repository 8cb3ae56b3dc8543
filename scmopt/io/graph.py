"""Loading ONNX models and bringing them to the canonical form the analysis works on.

Canonical form: every weight is an initializer (Constant / ConstantOfShape / Cast / Reshape
chains folded), initializers are not listed as graph inputs (IR < 4 style), every node has a
unique name, shapes are inferred, and export idioms the analysis cannot follow are rewritten
into equivalent forms (io.rewrites: Gemm over flattened tokens, fused QKV projections, the
dynamo exporter's batch-merging K^T). The canonical model computes exactly what the original
does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import shape_inference
from onnx_graphsurgeon.logger import G_LOGGER

from scmopt.errors import ScmoptError
from scmopt.io.rewrites import RULES

# Constant folding runs onnxruntime; neither its optimizer warnings nor graphsurgeon's chatter
# are for our users.
G_LOGGER.severity = G_LOGGER.ERROR
ort.set_default_logger_severity(3)


def load(src: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """Loads a model (with external data) from a path, or copies an in-memory one."""
    if isinstance(src, onnx.ModelProto):
        return copy.deepcopy(src)
    path = Path(src)
    if not path.is_file():
        raise ScmoptError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have many types
        raise ScmoptError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node:
        raise ScmoptError(f"{path}: not an ONNX model (empty graph)")
    for t in _tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        where = next((e.value for e in t.external_data if e.key == "location"), "")
        if not (path.parent / where).is_file():
            raise ScmoptError(
                f"{path}: external data file {where!r} (tensor {t.name!r}) is missing: expected "
                f"at {path.resolve().parent / where}"
            )
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScmoptError(f"{path}: external data unreadable ({first})") from exc
    return model


def _tensors(g: onnx.GraphProto):
    """Every tensor stored in `g`: initializers and attribute tensors, subgraphs included."""
    yield from g.initializer
    for node in g.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(sub)


def check(model: onnx.ModelProto, what: str = "model") -> None:
    """Runs the full ONNX checker; raises ScmoptError with the checker's first line."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScmoptError(f"{what} fails the ONNX checker: {first}") from exc


def opset(model: onnx.ModelProto) -> int:
    """The default-domain opset version."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ScmoptError("model imports no default-domain opset")


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference from scratch (stale value_info dropped first)."""
    model = copy.deepcopy(model)
    del model.graph.value_info[:]
    return shape_inference.infer_shapes(model, data_prop=True)


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Returns the canonical form (see module docstring); the function computed is unchanged."""
    model = copy.deepcopy(model)
    init_names = {i.name for i in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in init_names]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    if model.ir_version < 4:
        # IR < 4 requires initializers to be graph inputs; we drop that, so say IR 4.
        model.ir_version = 4
    graph = gs.import_onnx(model)
    graph.fold_constants(error_ok=True).cleanup().toposort()
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.op}_{i}"
        seen.add(node.name)
    out = refine_shapes(infer_shapes(_export(graph, model)))
    done: dict[str, int] = {}
    for rule in RULES:  # each sees the shapes of what the rules before it wrote
        if not rule.applies(out):  # no import of the graph when the rule cannot match
            continue
        rewritten = gs.import_onnx(out)
        if count := rule.rewrite(rewritten):
            out = refine_shapes(infer_shapes(_export(rewritten.cleanup().toposort(), model)))
            done[rule.__name__.rsplit(".", 1)[-1]] = count
    if done:  # provenance: inspect shows it, compiled models carry it
        set_metadata(out, {REWRITES_KEY: json.dumps(done, sort_keys=True)})
    return out


REWRITES_KEY = "scmopt.rewrites"


def rewrites_of(model: onnx.ModelProto) -> dict[str, int]:
    """The load-time rewrites canonicalize applied (rule -> matches), from the metadata."""
    value = metadata(model, REWRITES_KEY)
    return {} if value is None else json.loads(value)


def metadata(model: onnx.ModelProto, key: str) -> str | None:
    """The model's metadata value for `key`, or None."""
    return next((p.value for p in model.metadata_props if p.key == key), None)


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Sets (adds or replaces) metadata entries in place, the others kept in their order."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update(values)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


def _export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """graphsurgeon's export with `like`'s IR version, opsets and model metadata."""
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = like.ir_version
    del out.opset_import[:]
    out.opset_import.extend(like.opset_import)
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, field, getattr(like, field))
    del out.metadata_props[:]
    out.metadata_props.extend(like.metadata_props)
    return out


def _vague(vi: onnx.ValueInfoProto) -> bool:
    """ONNX inference left a dim unknown or invented a fresh symbol (unk__N) for it."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return True
    return any(not d.HasField("dim_value") and (not d.dim_param or d.dim_param.startswith("unk__"))
               for d in tt.shape.dim)  # fmt: skip


def refine_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Where ONNX's shape inference left dims unknown (a head split Reshape(B, T, -1, Dh) with
    a target built at run time, an Expand to a run-time shape: Hugging Face exports), takes
    onnxruntime's symbolic shape inference instead, which follows the shape arithmetic; the
    graph's inputs and outputs keep the export's dims. Unchanged when that inference fails."""
    vague = {vi.name for vi in model.graph.value_info if _vague(vi)}
    if not vague:
        return model
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        sym = SymbolicShapeInference.infer_shapes(copy.deepcopy(model), auto_merge=True)
    except Exception:  # noqa: BLE001 - an optional refinement: keep ONNX's shapes
        return model
    better = {vi.name: vi for vi in sym.graph.value_info
              if vi.name in vague and not _vague(vi)}  # fmt: skip
    if not better:
        return model
    out = copy.deepcopy(model)
    for vi in out.graph.value_info:
        if vi.name in better:
            vi.CopyFrom(better[vi.name])
    return out


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Static dims as ints, symbolic ones as strings, unknown as None, for every typed tensor."""
    shapes: dict[str, list[int | str | None]] = {}
    infos = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    for vi in infos:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(d.dim_value)
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shapes[vi.name] = dims
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def input_specs(model: onnx.ModelProto) -> dict[str, tuple[list[int | str | None], np.dtype]]:
    """Graph inputs (initializers excluded): shape and numpy dtype."""
    init_names = {i.name for i in model.graph.initializer}
    shapes = tensor_shapes(model)
    specs = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        specs[vi.name] = (shapes.get(vi.name, []), np.dtype(dtype))
    return specs


def save(model: onnx.ModelProto, path: str | Path) -> None:
    """Writes atomically (temp file + rename); large models get external data beside them."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    large = model.ByteSize() > 1_800_000_000 if _fits_protobuf(model) else True
    try:
        if large:
            onnx.save_model(
                model, str(tmp), save_as_external_data=True, location=f"{path.name}.data"
            )
        else:
            onnx.save_model(model, str(tmp))
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fits_protobuf(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
    except Exception:
        return False
    return True
