"""scmopt.io.batch: fixed-batch exports get a symbolic batch onnxruntime runs at any size, or
are reported as sample-by-sample; compress works on them end to end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import outputs, relative_error
from onnx import TensorProto, helper, numpy_helper
from plans import random_plan
from test_curvature import inputs, relu_model

import scmopt
from scmopt.analysis.measure import Runner
from scmopt.cli import main
from scmopt.compiler.compile import compile_plan
from scmopt.io.batch import batching, fixed_batch, symbolic_batch
from scmopt.runtime import sessions
from scmopt.runtime.hooks import dynamic_batch, simulate
from scmopt.units.analysis import analyze

RNG = np.random.default_rng(0)


def _init(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return _init(name, (RNG.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32))


def _model(nodes, inits, x_shape, ir: int = 8, y_shape=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ir)


def head_model(target: str, ir: int = 8) -> onnx.ModelProto:
    """EfficientNet-style head exported with batch 1: x[1,3,6,6] -> Conv -> Relu -> GAP ->
    Reshape -> Gemm -> Relu -> Gemm -> y[1,3]. `target`: "const" (the exporter folded
    x.view(x.size(0), -1) to [1, -1]) or "chain" (Shape -> Gather -> Unsqueeze -> Concat,
    which scmopt's canonical form folds to the same constant)."""
    inits = [_w("w", 8, 3, 3, 3), _w("b", 8), _w("W1", 6, 8), _w("b1", 6), _w("W2", 3, 6)]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
    ]
    if target == "const":
        inits.append(_init("t", np.array([1, -1], np.int64)))
    else:
        inits += [_init("zero", np.array(0, np.int64)), _init("ax", np.array([0], np.int64)),
                  _init("m1", np.array([-1], np.int64))]  # fmt: skip
        nodes += [
            helper.make_node("Shape", ["p"], ["s"], name="shape"),
            helper.make_node("Gather", ["s", "zero"], ["g"], name="gather", axis=0),
            helper.make_node("Unsqueeze", ["g", "ax"], ["u"], name="unsqueeze"),
            helper.make_node("Concat", ["u", "m1"], ["t"], name="concat", axis=0),
        ]
    nodes += [
        helper.make_node("Reshape", ["p", "t"], ["f"], name="/Reshape"),
        helper.make_node("Gemm", ["f", "W1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["q"], name="relu2"),
        helper.make_node("Gemm", ["q", "W2"], ["y"], name="fc2", transB=1),
    ]
    model = _model(nodes, inits, [1, 3, 6, 6], ir, y_shape=[1, 3])
    return onnx.shape_inference.infer_shapes(model) if target == "chain" else model


def head_data(n: int = 64) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((n, 3, 6, 6)).astype(np.float32)}


def merged_batch_model() -> onnx.ModelProto:
    """relu_model(fixed_batch=True) whose output is flattened with the batch and back ([1, 3]
    -> [3] -> [1, 3]): no rewrite can make that follow a batch, so it runs one sample at a time
    (same function, same cuts and units as relu_model)."""
    model = relu_model(fixed_batch=True)
    g = model.graph
    last = g.node[len(g.node) - 1]
    last.output[0] = "y_raw"
    g.node.extend(
        [
            helper.make_node("Reshape", ["y_raw", "flat"], ["y3"], name="flat"),
            helper.make_node("Reshape", ["y3", "flat_back"], ["y"], name="back"),
        ]
    )
    g.initializer.extend([_init("flat", np.array([3])), _init("flat_back", np.array([1, 3]))])
    return model


def _runs_like_single_samples(original, batched, x: np.ndarray, b: int = 1) -> None:
    """`batched` on all of `x` equals `original` (fixed batch b) on each block of b samples."""
    so, sb = sessions.session(original, "cpu"), sessions.session(batched, "cpu")
    want = np.concatenate([so.run(None, {"x": x[i : i + b]})[0] for i in range(0, len(x), b)])
    np.testing.assert_allclose(sb.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)


# --- the rewrite -------------------------------------------------------------------------------
def test_fixed_batch():
    assert fixed_batch(head_model("const")) == 1
    assert fixed_batch(relu_model()) is None
    two = _model([helper.make_node("Relu", ["x"], ["y"])], [], [2, 4])
    two.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 4]))
    assert fixed_batch(two) is None  # inputs disagree


def test_symbolic_input_is_only_relabelled():
    model = relu_model()
    model.graph.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [7, 6]))
    ref = onnx.ModelProto.FromString(model.SerializeToString())  # the old dynamic_batch
    for vi in list(ref.graph.input) + list(ref.graph.output):
        vi.type.tensor_type.shape.dim[0].Clear()
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del ref.graph.value_info[:]
    assert symbolic_batch(model).SerializeToString() == ref.SerializeToString()
    assert dynamic_batch(model).SerializeToString() == ref.SerializeToString()


@pytest.mark.parametrize(("target", "ir"), [("const", 8), ("chain", 8), ("chain", 14)])
def test_reshape_to_one_minus_one_gets_a_copied_batch(target, ir):
    """[1, -1] becomes [0, -1] (a -1 for the batch would give [-1, -1], which is invalid)."""
    ug = analyze(head_model(target, ir))
    (reshape,) = [n for n in ug.model.graph.node if n.op_type == "Reshape"]
    res = batching(ug.model)
    assert res.batched and res.reason is None
    assert res.rewrites == ["Reshape '/Reshape': target [1, -1] -> [0, -1]"]
    x = head_data(5)["x"]
    _runs_like_single_samples(ug.model, res.model, x)
    # the unrewritten model at batch 2 merges the batch into the features and then fails
    relabelled = onnx.ModelProto.FromString(ug.model.SerializeToString())
    for vi in relabelled.graph.input:
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    sess, reason = sessions.batch_probe(relabelled, {"x": x}, "cpu")
    assert sess is None and "does not run at batch 2" in reason


def test_original_model_is_untouched_and_same_at_its_batch():
    model = head_model("const")
    before = model.SerializeToString()
    rewritten = symbolic_batch(model)
    assert model.SerializeToString() == before
    _runs_like_single_samples(model, rewritten, head_data(1)["x"])


def _expand_model():
    nodes = [helper.make_node("Unsqueeze", ["x", "ax1"], ["u"], name="unsq"),
             helper.make_node("Expand", ["u", "s"], ["e"], name="expand"),
             helper.make_node("ReduceSum", ["e", "ax1"], ["y"], keepdims=0)]  # fmt: skip
    return _model(nodes, [_init("ax1", [1]), _init("s", [2, 3, 4])], [2, 4])


def _constant_of_shape_model():
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5])
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["z"], name="zeros", value=fill),
             helper.make_node("Concat", ["x", "z"], ["y"], name="cat", axis=1)]  # fmt: skip
    return _model(nodes, [_init("s", [2, 3])], [2, 4])


def _tile_model():
    nodes = [helper.make_node("Unsqueeze", ["x", "ax1"], ["u"], name="unsq"),
             helper.make_node("Tile", ["cls", "rep"], ["t"], name="tile"),
             helper.make_node("Concat", ["t", "u"], ["y"], name="cat", axis=1)]  # fmt: skip
    return _model(nodes, [_init("ax1", [1]), _w("cls", 1, 1, 4), _init("rep", [2, 1, 1])], [2, 4])


def _class_token_model():
    nodes = [helper.make_node("Unsqueeze", ["x", "ax1"], ["u"], name="unsq"),
             helper.make_node("Concat", ["cls", "u"], ["y"], name="cat", axis=1)]  # fmt: skip
    return _model(nodes, [_init("ax1", [1]), _w("cls", 1, 1, 4)], [1, 4])


def _equal_rows_model():
    bias = np.tile(RNG.standard_normal((1, 4)).astype(np.float32), (2, 1))
    nodes = [helper.make_node("Add", ["x", "bias"], ["a"], name="add"),
             helper.make_node("Concat", ["a", "z"], ["y"], name="cat", axis=1)]  # fmt: skip
    return _model(nodes, [_init("bias", bias), _init("z", np.zeros((2, 3), np.float32))], [2, 4])


@pytest.mark.parametrize(
    ("make", "b", "rewrites"),
    [
        (_expand_model, 2, ["Expand 'expand': shape [2, 3, 4] -> [1, 3, 4]"]),
        (_constant_of_shape_model, 2, ["ConstantOfShape 'zeros': shape [2, 3] -> [batch, *[3]]"]),
        (_tile_model, 2, ["Tile 'tile': repeats [2, 1, 1] -> [batch, *[1, 1]]"]),
        (_class_token_model, 1, ["Concat 'cat': operand 'cls' (batch 1) expanded to the batch"]),
        (
            _equal_rows_model,
            2,
            [
                "Add 'add': constant 'bias' of batch 2 with equal rows -> one row",
                "Concat 'cat': operand 'z' (batch 2) expanded to the batch",
            ],
        ),
    ],
)
def test_shape_constants_that_bake_the_batch(make, b, rewrites):
    model = make()
    res = batching(model)
    assert res.batched, res.reason
    assert res.rewrites == rewrites
    x = RNG.standard_normal((3 * b, 4)).astype(np.float32)
    _runs_like_single_samples(model, res.model, x, b)  # 3 blocks of the original batch
    _runs_like_single_samples(model, res.model, x[:b], b)  # and exactly it at batch b


def test_constant_with_different_rows_cannot_follow_the_batch():
    model = _model([helper.make_node("Add", ["x", "bias"], ["y"])], [_w("bias", 2, 4)], [2, 4])
    res = batching(model)
    assert not res.batched and res.rewrites == []
    assert "not two samples" in res.reason


def test_a_merged_batch_must_run_sample_by_sample():
    res = batching(merged_batch_model(), inputs(4))
    assert not res.batched and "does not run at batch 2" in res.reason
    assert not sessions.accepts_batch(dynamic_batch(merged_batch_model()), inputs(4), "cpu")


def test_batch_probe_catches_a_batch_that_runs_but_mixes_samples():
    """[N,6] -> Reshape [1,-1] -> Softmax -> Reshape [-1,6]: runs at batch 2 with the right
    output shape, but the softmax spans both samples."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"]),
             helper.make_node("Softmax", ["f"], ["s"], axis=-1),
             helper.make_node("Reshape", ["s", "back"], ["y"])]  # fmt: skip
    model = _model(nodes, [_init("flat", [1, -1]), _init("back", [-1, 6])], ["N", 6])
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    sess, reason = sessions.batch_probe(model, {"x": x}, "cpu")
    assert sess is None and reason == "output 0 at batch 2 differs from the single-sample runs"
    assert sessions.batch_probe(relu_model(), inputs(2), "cpu")[1] is None
    # one sample only: it is used twice
    assert sessions.batch_probe(relu_model(), inputs(1), "cpu")[1] is None


def test_batching_without_input_shape():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [], None)
    res = batching(model)
    assert not res.batched and "no shape" in res.reason


def test_shape_inference_refusing_the_model_keeps_the_relabel(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("inference failed")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    res = batching(head_model("const"))
    assert res.rewrites == [] and not res.batched


# --- end to end ----------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["const", "chain"])
def test_compress_a_batch_one_export_with_a_baked_reshape(target):
    model, data = head_model(target), head_data(64)
    ug = analyze(model)
    assert Runner(ug, data, device="cpu").batched  # the analysis runs on batches now
    res = scmopt.compress(model, data, keep=0.5, seed=0)
    assert res.report["compile_max_abs_error"] < 1e-4
    assert res.report["flops"]["unknown"] == {"before": [], "after": []}
    assert res.report["flops"]["after"] < res.report["flops"]["before"]
    assert res.model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    # the compiled model (fixed batch kept) equals the plan's simulation, sample by sample
    feeds = {"x": data["x"][:1]}
    assert relative_error(outputs(res.model, feeds), outputs(simulate(ug, res.plan), feeds)) < 1e-5
    plan = random_plan(ug, 0.5, seed=2)
    compiled = compile_plan(ug, plan).model
    for i in range(3):
        feeds = {"x": data["x"][i : i + 1]}
        assert relative_error(outputs(compiled, feeds), outputs(simulate(ug, plan), feeds)) < 1e-5


def test_compress_a_model_that_runs_sample_by_sample():
    res = scmopt.compress(merged_batch_model(), inputs(64), keep=0.5, seed=0)
    assert not Runner(res.unit_graph, inputs(8), device="cpu").batched
    assert res.report["compile_max_abs_error"] < 1e-4
    assert 0 <= res.report["validation"]["iia"] <= 1


@pytest.mark.parametrize("make", [lambda: head_model("const"), lambda: head_model("chain"),
                                  merged_batch_model])  # fmt: skip
def test_inspect_exits_0(tmp_path, make):
    path = tmp_path / "m.onnx"
    onnx.save(make(), path)
    res = CliRunner().invoke(main, ["inspect", str(path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "FLOPs/sample" in res.output and "unknown" not in res.output


def test_reshape_target_from_the_input_shape_in_the_probes():
    """A dynamic-batch model whose Reshape target is Shape(x)[0] of the graph input (`b =
    x.size(0)` at the top of forward): the same failure as the EfficientNet report."""
    inits = [_w("w0", 6, 3, 3, 3), _w("w", 4, 6, 3, 3), _w("W", 5, 4), _w("W2", 3, 5),
             _init("zero", np.array(0, np.int64)), _init("ax", np.array([0], np.int64)),
             _init("m1", np.array([-1], np.int64))]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w"], ["c"], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["g"], axis=0),
        helper.make_node("Unsqueeze", ["g", "ax"], ["u"]),
        helper.make_node("Concat", ["u", "m1"], ["t"], axis=0),
        helper.make_node("Reshape", ["p", "t"], ["f"], name="/Reshape"),
        helper.make_node("Gemm", ["f", "W"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["q"]),
        helper.make_node("Gemm", ["q", "W2"], ["y"], transB=1),
    ]
    model = _model(nodes, inits, ["N", 3, 6, 6], y_shape=["N", 3])
    res = scmopt.compress(model, head_data(40), keep=0.5, seed=0)
    assert res.report["compile_max_abs_error"] < 1e-4
