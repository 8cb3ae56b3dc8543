"""scmopt.cost on tiny hand-built graphs whose parameter and FLOP counts are known by hand."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scmopt.ops.cost import count_flops, count_params, linear_macs, model_cost
from scmopt.runtime.sessions import session


def _init(name: str, shape: tuple[int, ...], dtype=np.float32) -> onnx.TensorProto:
    rng = np.random.default_rng(0)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)


def _model(
    nodes, inputs, outputs, inits=(), opset: int = 17, check: bool = True
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def _x(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_grouped_conv():
    # X[N,4,8,8] * W[8,2,3,3], group=2, pad 1 -> Y[N,8,8,8]: 512 outputs x (4/2)*3*3 MACs each.
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, pads=[1, 1, 1, 1])
    m = _model(
        [node],
        [_x("x", ["N", 4, 8, 8])],
        [_x("y", ["N", 8, 8, 8])],
        [_init("w", (8, 2, 3, 3)), _init("b", (8,))],
    )
    assert count_params(m) == 8 * 2 * 9 + 8
    assert count_flops(m) == 2 * 512 * 18 == 18432


def test_depthwise_strided_conv():
    # X[1,6,5,5], W[6,1,3,3], group=6, stride 2, no pad -> Y[1,6,2,2]: 24 outputs x 9 MACs.
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=6, strides=[2, 2])
    m = _model([node], [_x("x", [1, 6, 5, 5])], [_x("y", [1, 6, 2, 2])], [_init("w", (6, 1, 3, 3))])
    assert count_params(m) == 54
    assert count_flops(m) == 2 * 24 * 9 == 432


def test_conv_transpose():
    # X[1,3,4,4], W[3,2,2,2], stride 2 -> Y[1,2,8,8]; each of 48 inputs scatters into 2*2*2.
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    m = _model([node], [_x("x", [1, 3, 4, 4])], [_x("y", [1, 2, 8, 8])], [_init("w", (3, 2, 2, 2))])
    assert count_flops(m) == 2 * 48 * 8 == 768
    # Same count seen from the output side: 128 outputs x (Cin=3) x (2*2 / stride^2 = 1).
    assert count_flops(m) == 2 * 128 * 3


def test_gemm_trans_b_and_trans_a():
    # A[N,10] x B[3,10]^T + C[3] -> [N,3]: M=1 (batch), K=10, N=3.
    gemm = helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1)
    m = _model(
        [gemm],
        [_x("a", ["batch", 10])],
        [_x("y", ["batch", 3])],
        [_init("w", (3, 10)), _init("c", (3,))],
    )
    assert count_params(m) == 33
    assert count_flops(m) == 2 * 1 * 10 * 3 == 60

    # transA: A[10,2]^T x B[10,5] -> [2,5]: M=2, K=10, N=5 (static, no batch rewrite).
    gemm = helper.make_node("Gemm", ["a", "w"], ["y"], transA=1)
    m = _model([gemm], [_x("a", [10, 2])], [_x("y", [2, 5])], [_init("w", (10, 5))])
    assert count_flops(m) == 2 * 2 * 10 * 5 == 200


def test_matmul_broadcast_and_batched():
    # [N,5,7] x [7,4] -> [N,5,4]: 20 outputs x K=7.
    mm = helper.make_node("MatMul", ["a", "w"], ["y"])
    m = _model([mm], [_x("a", ["N", 5, 7])], [_x("y", ["N", 5, 4])], [_init("w", (7, 4))])
    assert count_params(m) == 28
    assert count_flops(m) == 2 * 20 * 7 == 280

    # Two activations, batched: [N,3,2,6] x [N,3,6,5] -> [N,3,2,5]: 30 outputs x K=6.
    mm = helper.make_node("MatMul", ["a", "b"], ["y"])
    m = _model([mm], [_x("a", ["N", 3, 2, 6]), _x("b", ["N", 3, 6, 5])], [_x("y", ["N", 3, 2, 5])])
    assert count_params(m) == 0
    assert count_flops(m) == 2 * 30 * 6 == 360


def test_chain_with_elementwise_and_constants():
    # Conv -> Relu -> Flatten -> MatMul(Constant weight) -> Add(bias): elementwise not counted.
    w_const = numpy_helper.from_array(np.ones((2 * 4 * 4, 3), np.float32), "wc")
    shape_const = numpy_helper.from_array(np.array([1, 2], np.int64), "sc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Constant", [], ["wm"], value=w_const),
        helper.make_node("Constant", [], ["unused_shape"], value=shape_const),
        helper.make_node("Constant", [], ["bias"], value_floats=[0.1, 0.2, 0.3]),
        helper.make_node("MatMul", ["f", "wm"], ["mm"]),
        helper.make_node("Add", ["mm", "bias"], ["y"]),
    ]
    m = _model(nodes, [_x("x", ["N", 1, 4, 4])], [_x("y", ["N", 3])], [_init("w", (2, 1, 3, 3))])
    # 18 conv weights + 96 Constant matmul weights + 3 value_floats; the int64 Constant is not.
    assert count_params(m) == 18 + 96 + 3
    conv_macs = 2 * 16 * 9
    mm_macs = 32 * 3
    assert linear_macs(m) == {"c": conv_macs, "mm": mm_macs}
    assert count_flops(m) == 2 * (conv_macs + mm_macs)


def test_batch_dim_taken_as_one_but_static_dims_kept():
    node = helper.make_node("MatMul", ["a", "w"], ["y"], name="mm")
    w = _init("w", (4, 2))
    sym = _model([node], [_x("a", ["batch", 4])], [_x("y", ["batch", 2])], [w])
    unk = _model([node], [_x("a", [None, 4])], [_x("y", [None, 2])], [w])
    fixed = _model([node], [_x("a", [3, 4])], [_x("y", [3, 2])], [w])
    assert count_flops(sym) == count_flops(unk) == 2 * 8
    assert count_flops(fixed) == 3 * 2 * 8
    # The caller's model is not modified.
    assert sym.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_unknown_shape_is_reported_not_raised():
    # No shape on x at all and no sample: neither inference nor a run can know the Conv's shapes.
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    m = _model([node], [x], [_x("y", [1, 2, 2, 2])], [_init("w", (2, 1, 3, 3))], check=False)
    c = model_cost(m)
    assert (c.flops, c.params, c.unknown, c.macs) == (0, 18, ["conv"], {"conv": None})
    assert "no sample" in c.note
    assert c.describe() == "0 (1 linear nodes of unknown shape: conv)"
    assert count_flops(m) == 0 and linear_macs(m) == {"conv": None}
    # a calibration sample gives the input's shape: X[1,1,4,4] -> Y[1,2,2,2], 8 outputs x 9
    sample = {"x": np.zeros((5, 1, 4, 4), np.float32)}
    assert model_cost(m, sample).macs == {"conv": 8 * 9} and not model_cost(m, sample).unknown


def test_initializer_listed_as_input_counted_once():
    node = helper.make_node("Gemm", ["a", "w"], ["y"], transB=1)
    graph = helper.make_graph(
        [node],
        "g",
        [_x("a", ["N", 5]), _x("w", [2, 5])],
        [_x("y", ["N", 2])],
        initializer=[_init("w", (2, 5))],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    assert count_params(m) == 10
    assert count_flops(m) == 20


def test_batch_lost_in_shape_arithmetic_measured_by_onnxruntime():
    # torch's TorchScript export of x.repeat(...) emits Expand(x, ConstantOfShape([4]) of ones),
    # whose output batch dim onnx shape inference cannot resolve: one onnxruntime run gives it.
    ones = numpy_helper.from_array(np.array([1], np.int64), "one")
    rank = numpy_helper.from_array(np.array([4], np.int64), "rank")
    nodes = [
        helper.make_node("Constant", [], ["r"], value=rank),
        helper.make_node("ConstantOfShape", ["r"], ["shape"], value=ones),
        helper.make_node("Expand", ["x", "shape"], ["e"]),
        helper.make_node("Conv", ["e", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    m = _model(
        nodes, [_x("x", ["N", 2, 4, 4])], [_x("y", ["N", 3, 4, 4])], [_init("w", (3, 2, 3, 3))]
    )
    assert count_params(m) == 54
    assert count_flops(m) == 2 * (3 * 16) * (2 * 9)
    assert model_cost(m).measured


# --- shapes static inference cannot know -------------------------------------------------------
def _unknown_shape_model(custom: bool = False) -> onnx.ModelProto:
    """x[N,2,4,4] -> conv1 -> (Reshape to Abs(Shape(c)), or a custom-domain op) -> conv2 -> Relu
    -> Flatten -> mm[64,5]. data_prop does not follow Abs, and nothing follows a custom op, so
    conv2's and mm's shapes are statically unknown."""
    if custom:
        middle = [helper.make_node("Scale", ["c"], ["c2"], domain="com.example")]
    else:
        middle = [
            helper.make_node("Shape", ["c"], ["s"]),
            helper.make_node("Abs", ["s"], ["t"]),
            helper.make_node("Reshape", ["c", "t"], ["c2"]),
        ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1] * 4, name="conv1"),
        *middle,
        helper.make_node("Conv", ["c2", "w2"], ["d"], pads=[1] * 4, name="conv2"),
        helper.make_node("Relu", ["d"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [_x("x", ["N", 2, 4, 4])],
        [_x("y", ["N", 5])],
        [_init("w1", (3, 2, 3, 3)), _init("w2", (4, 3, 3, 3)), _init("w3", (64, 5))],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] * custom)
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


# conv1: 3*16 outputs x 2*9; conv2: 4*16 outputs x 3*9; mm: 5 outputs x K=64
CONV1, CONV2, MM = 48 * 18, 64 * 27, 5 * 64


def test_shapes_inference_leaves_unknown_come_from_one_onnxruntime_run():
    from scmopt.io.shapes import resolve_shapes

    m = _unknown_shape_model()
    static = resolve_shapes(m, names=[])  # nothing requested: static inference only
    assert static.dims["d"] == (None, 4, None, None) and not static.measured
    c = model_cost(m)
    assert c.macs == {"conv1": CONV1, "conv2": CONV2, "mm": MM} and c.unknown == []
    assert c.measured and c.flops == 2 * (CONV1 + CONV2 + MM) == 5824
    # the real shape of a batch-1 run, checked against onnxruntime's own output
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    sess = session(m, "cpu")
    assert sess.run(None, {"x": x})[0].shape == (1, 5)
    assert count_flops(m, {"x": x}) == 5824


def test_custom_domain_op_upstream_leaves_nodes_unknown_listed():
    m = _unknown_shape_model(custom=True)
    c = model_cost(m)
    assert c.unknown == ["conv2", "mm"] and c.macs["conv1"] == CONV1
    assert c.flops == 2 * CONV1 and not c.measured
    assert "onnxruntime could not run" in c.note and "com.example" in c.note
    assert c.describe() == "1,728 (2 linear nodes of unknown shape: conv2, mm)"


def test_paddle_style_weights_in_constant_nodes():
    """Every weight a Constant node (Paddle2ONNX): parameters and FLOPs of the raw and the
    canonical model agree with the counts made by hand."""
    from scmopt.units.analysis import analyze

    rng = np.random.default_rng(1)

    def const(name, *shape):
        value = numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        return helper.make_node("Constant", [], [name], value=value)

    target = numpy_helper.from_array(np.array([-1, 8], np.int64), "target")
    nodes = [
        const("w1", 8, 3, 3, 3),
        const("b1", 8),
        const("w2", 8, 10),
        const("b2", 10),
        helper.make_node("Constant", [], ["target"], value=target),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Reshape", ["p", "target"], ["f"]),
        helper.make_node("MatMul", ["f", "w2"], ["mm"]),
        helper.make_node("Add", ["mm", "b2"], ["y"]),
    ]
    m = _model(nodes, [_x("x", ["N", 3, 6, 6])], [_x("y", ["N", 10])], opset=11)
    params = 8 * 27 + 8 + 80 + 10
    flops = 2 * (8 * 36 * 27 + 8 * 10)
    for model in (m, analyze(m).model):
        c = model_cost(model)
        assert (c.params, c.flops, c.unknown) == (params, flops, [])


def test_macs_functions_are_pure_and_say_none_when_unknown():
    from scmopt.ops import macs

    mm = helper.make_node("MatMul", ["q", "k"], ["s"])
    # attention Q K^T: [1,4,7,16] x [1,4,16,7] -> [1,4,7,7], K = 16; output derived when unknown
    qk = {"q": (1, 4, 7, 16), "k": (1, 4, 16, 7)}
    assert macs.matmul_macs(mm, {**qk, "s": (1, 4, 7, 7)}) == macs.matmul_macs(mm, qk) == 3136
    assert macs.matmul_macs(mm, {"q": (1, 4, 7, 16), "k": (3, 4, 16, 7)}) == 3 * 3136  # broadcast
    assert macs.matmul_macs(mm, {"q": (2, 4, 7, 16), "k": (3, 4, 16, 7)}) is None  # cannot
    assert macs.matmul_macs(mm, {"q": (16,), "k": (16, 5)}) == 80  # 1-D operand
    assert macs.matmul_macs(mm, {"q": (None, 16), "k": (16, 5)}) is None
    gemm = helper.make_node("Gemm", ["a", "b"], ["y"], transA=1, transB=1)
    assert macs.gemm_macs(gemm, {"a": (10, 2), "b": (5, 10)}) == 2 * 10 * 5
    assert macs.gemm_macs(gemm, {"a": (10, 2, 1), "b": (5, 10)}) is None
    assert macs.gemm_macs(gemm, {"a": (10, 2)}) is None
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    assert macs.conv_macs(conv, {"w": (8, 2, 3, 3)}) is None
    assert macs.conv_macs(conv, {"w": (8, 2, 3, 3), "y": (1, 8, 4, 4)}) == 128 * 18
    convt = helper.make_node("ConvTranspose", ["x", "w"], ["y"])
    assert macs.conv_transpose_macs(convt, {"x": (1, 3, 4, 4), "w": (3, 2, 2, 2)}) == 48 * 8
    assert macs.conv_transpose_macs(convt, {"x": (1, 3, None, 4), "w": (3, 2, 2, 2)}) is None
    assert macs.node_macs(helper.make_node("Relu", ["x"], ["y"]), {}) == 0
    custom = helper.make_node("MatMul", ["q", "k"], ["s"], domain="com.example")
    assert macs.node_macs(custom, qk) == 0


@pytest.mark.parametrize("custom", [False, True])
def test_inspect_exits_0_when_shapes_are_unknown(tmp_path, custom):
    from click.testing import CliRunner

    from scmopt.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(_unknown_shape_model(custom), path)
    res = CliRunner().invoke(main, ["inspect", str(path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    if custom:
        assert "1,728 FLOPs/sample (2 linear nodes of unknown shape: conv2, mm)" in res.output
    else:
        assert "5,824 FLOPs/sample" in res.output and "unknown" not in res.output


def test_compress_reports_unknown_costs_instead_of_failing(monkeypatch):
    """When even the onnxruntime run cannot give a shape, compress still finishes: the FLOPs
    are a lower bound, named in the report's notes and its HTML table."""
    import scmopt
    from scmopt.ops import cost
    from scmopt.report.html import render_html

    real = cost.resolve_shapes

    def static_only(model, sample=None, names=None, device="auto"):
        return real(model, sample, names=[], device=device)

    monkeypatch.setattr(cost, "resolve_shapes", static_only)
    x = np.random.default_rng(0).standard_normal((32, 2, 4, 4)).astype(np.float32)
    res = scmopt.compress(_unknown_shape_model(), {"x": x}, keep=0.5, seed=0)
    flops = res.report["flops"]
    assert flops["unknown"] == {"before": ["conv2", "mm"], "after": ["conv2", "mm"]}
    assert flops["before"] == 2 * CONV1
    assert "FLOPs before are a lower bound (2 linear nodes of unknown shape: conv2, mm), " \
           "counted as 0" in res.report["notes"]  # fmt: skip
    html = render_html(res.report, res.unit_graph)
    assert "lower bound: linear nodes of unknown shape counted as 0, 2 before / 2 after" in html


def test_unknown_text_names_at_most_four():
    c = model_cost(_unknown_shape_model(custom=True))
    many = type(c)(flops=0, params=0, unknown=[f"n{i}" for i in range(6)])
    assert many.unknown_text() == " (6 linear nodes of unknown shape: n0, n1, n2, n3 (+2 more))"
    assert type(c)(flops=5, params=0).describe() == "5"
