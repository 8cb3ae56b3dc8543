"""ops.layout: Transpose moves the channel axis, Reshape/Flatten re-index features (channels-
last heads become units), Squeeze/Unsqueeze/Gather shift the axis, Concat/Split join and divide
channels, Slice/Pad/Resize along other axes keep the layout; what they cannot follow freezes."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ops import (
    Net,
    check_plan,
    check_random_plans,
    cut_read_by,
    feeds_for,
    frozen_with,
    reasons,
    units_of,
)
from scmopt import units
from scmopt.io.graph import infer_shapes
from scmopt.plan import Plan


def conv(n: Net, x: str, name: str, cin: int, cout: int, k: int = 1) -> str:
    w, b = n.w(f"{name}.w", cout, cin, k, k), n.b(f"{name}.b", cout)
    return n.op("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[k // 2] * 4)


def gemm(n: Net, x: str, name: str, k: int, o: int, out: str | None = None) -> str:
    return n.op("Gemm", [x, n.w(f"{name}.w", o, k), n.b(f"{name}.b", o)], name, out=out, transB=1)


def all_prunable(ug, node: str, c: int) -> list:
    us = units_of(ug, node)
    assert len(us) == c and all(u.prunable for u in us), (node, reasons(us))
    return us


# --- Transpose -----------------------------------------------------------------------------


def test_transpose_nhwc_to_nchw_and_back():
    """x[N,4,4,3] -> MatMul(3->6) (channels last) -> Relu -> Transpose(0,3,1,2) -> conv(6->8)
    -> Relu -> Transpose(0,2,3,1) -> MatMul(8->2) = y."""
    n = Net(0)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 3, 6)], "dense")], "relu1")
    t = n.op("Transpose", [h], "to_nchw", perm=[0, 3, 1, 2])
    r = n.op("Relu", [conv(n, t, "conv", 6, 8, 3)], "relu2")
    t2 = n.op("Transpose", [r], "to_nhwc", perm=[0, 2, 3, 1])
    n.op("MatMul", [t2, n.w("w2", 8, 2)], "head", out="y")
    model = n.model({"x": ["N", 4, 4, 3]}, {"y": ["N", 4, 4, 2]})
    ug = units.analyze(model)
    dense, convs = all_prunable(ug, "dense", 6), all_prunable(ug, "conv", 8)
    assert ug.layouts["relu1"].axis == 3 and ug.layouts["to_nchw"].axis == 1
    assert ug.layouts["to_nhwc"].axis == 3
    assert cut_read_by(ug, "conv").units == [u.id for u in dense]
    head = cut_read_by(ug, "head")
    assert head.tensor == "to_nhwc" and head.units == [u.id for u in convs]
    assert head.spatial == (4, 4)
    check_random_plans(model, feeds_for(model, batch=2))


def test_transposing_the_batch_axis_is_refused():
    n = Net(1)
    r = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 3, 6)], "dense")], "relu")
    n.op("MatMul", [r, n.w("w2", 6, 2)], "side", out="y0")
    n.op("Transpose", [r], "swap_batch", out="y1", perm=[1, 0, 2])
    n.op("Transpose", [r], "reverse", out="y2")  # no perm: reverses every axis
    model = n.model({"x": ["N", 4, 3]}, {"y0": None, "y1": None, "y2": None})
    dense = units_of(units.analyze(model), "dense")
    assert len(dense) == 6 and frozen_with(dense, "transposes the batch axis"), reasons(dense)


# --- Flatten / Reshape into dense heads ------------------------------------------------------


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape0", "ReshapeN"])
def test_flatten_of_nchw_into_gemm_has_blocks(flatten):
    """conv(3->6) -> Relu -> flatten -> Gemm(6*3*4 -> 5) -> Relu -> Gemm(5->2) = y."""
    n = Net(2)
    r = n.op("Relu", [conv(n, "x", "conv", 3, 6, 3)], "relu")
    if flatten == "Flatten":
        f = n.op("Flatten", [r], "flat", axis=1)
    else:
        target = [0, -1] if flatten == "Reshape0" else [-1, 72]
        f = n.op("Reshape", [r, n.ints("target", target)], "flat")
    h = n.op("Relu", [gemm(n, f, "fc1", 72, 5)], "relu_fc")
    gemm(n, h, "fc2", 5, 2, out="y")
    model = n.model({"x": ["N", 3, 3, 4]}, {"y": ["N", 2]})
    ug = units.analyze(model)
    convs = all_prunable(ug, "conv", 6)
    cut = cut_read_by(ug, "fc1")
    assert cut.tensor == "flat" and cut.block == 12 and cut.layout.major
    assert cut.units == [u.id for u in convs] and cut.positions == 12
    all_prunable(ug, "fc1", 5)
    check_random_plans(model, feeds_for(model))
    plan = Plan().set_constant(convs[2].id, {"flat": np.arange(12.0)})
    compiled = check_plan(ug, plan, feeds_for(model))
    dims = {i.name: tuple(i.dims) for i in compiled.graph.initializer}
    fc1 = next(nd for nd in compiled.graph.node if nd.name == "fc1")
    assert dims[fc1.input[1]] == (5, 60)
    if flatten == "ReshapeN":
        flat = next(nd for nd in compiled.graph.node if nd.name == "flat")
        target = next(i for i in compiled.graph.initializer if i.name == flat.input[1])
        assert list(np.frombuffer(target.raw_data, np.int64)) == [-1, 60]


@pytest.mark.parametrize("head", ["Flatten", "Reshape", "permute-Reshape", "MatMul"])
def test_channels_last_flatten_into_a_dense_head(head):
    """conv(3->6) -> Relu -> Transpose(0,2,3,1) (NHWC) [-> Transpose(0,2,1,3)] -> flatten ->
    Gemm (or MatMul): the 6 channels are interleaved in the flat features, and are units."""
    n = Net(3)
    r = n.op("Relu", [conv(n, "x", "conv", 3, 6, 3)], "relu")
    t = n.op("Transpose", [r], "nhwc", perm=[0, 2, 3, 1])
    if head == "permute-Reshape":
        t = n.op("Transpose", [t], "permute", perm=[0, 2, 1, 3])
    if head == "Flatten":
        f = n.op("Flatten", [t], "flat", axis=1)
    else:
        f = n.op("Reshape", [t, n.ints("target", [0, -1])], "flat")
    if head == "MatMul":
        h = n.op("MatMul", [f, n.w("fc1.w", 72, 5)], "fc1")
    else:
        h = gemm(n, f, "fc1", 72, 5)
    gemm(n, n.op("Relu", [h], "relu_fc"), "fc2", 5, 2, out="y")
    model = n.model({"x": ["N", 3, 3, 4]}, {"y": ["N", 2]})
    ug = units.analyze(model)
    convs = all_prunable(ug, "conv", 6)
    cut = cut_read_by(ug, "fc1")
    assert cut.block == 12 and not cut.layout.major
    np.testing.assert_array_equal(cut.layout.chan, np.arange(72) % 6)
    assert cut.units == [u.id for u in convs]
    check_random_plans(model, feeds_for(model))


def test_head_merge_into_a_dense_layer():
    """[B, T, H, Din] -> MatMul(Din->D) (D channels on axis 3) -> Relu -> Reshape [B, T, H*D]
    (chan = f % D, block H) -> MatMul(H*D -> 3): per-position constants over H and T."""
    n = Net(20)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 4, 3)], "per_head")], "relu")
    m = n.op("Reshape", [h, n.ints("merge", [0, 0, 6])], "merged")
    n.op("MatMul", [m, n.w("wo", 6, 3)], "out_proj", out="y")
    model = n.model({"x": ["B", 5, 2, 4]}, {"y": ["B", 5, 3]})
    ug = units.analyze(model)
    us = all_prunable(ug, "per_head", 3)
    cut = cut_read_by(ug, "out_proj")
    assert cut.layout.axis == 2 and cut.block == 2 and not cut.layout.major
    assert cut.units == [u.id for u in us] and cut.positions == 10
    check_random_plans(model, feeds_for(model, batch=2), fraction=0.4)


def test_head_split_of_per_feature_channels_groups_them_into_heads():
    """[B, T, H*D] with one unit per feature -> Reshape [B, T, H, D]: the features of each head
    become one unit (units.layout.split_layout), here frozen because the heads reach an
    output."""
    n = Net(21)
    h = n.op("MatMul", ["x", n.w("w1", 4, 6)], "qkv")
    n.op("MatMul", [h, n.w("ws", 6, 2)], "side", out="y0")
    n.op("Reshape", [h, n.ints("split", [0, 0, 2, 3])], "heads", out="y1")
    model = n.model({"x": ["B", 5, 4]}, {"y0": None, "y1": None})
    us = units_of(units.analyze(model), "qkv")
    assert len(us) == 2
    assert [len(u.producers) for u in us] == [3, 3]
    assert frozen_with(us, "reaches graph output 'y1'"), reasons(us)


def test_single_channel_flatten_is_one_unit():
    """A value head: conv(->1) -> Relu -> Flatten -> Gemm: one unit with a block of H*W, not
    H*W anonymous frozen ones."""
    n = Net(4)
    r = n.op("Relu", [conv(n, "x", "value_conv", 3, 1)], "relu")
    f = n.op("Flatten", [r], "flat", axis=1)
    gemm(n, f, "fc", 12, 2, out="y")
    ug = units.analyze(n.model({"x": ["N", 3, 3, 4]}, {"y": ["N", 2]}))
    assert list(ug.units) == ["value_conv:0"], reasons(ug.units.values())
    assert ug.cuts["flat"].block == 12


def test_flatten_and_reshape_refusals():
    n = Net(5)
    r = n.op("Relu", [conv(n, "x", "conv", 3, 4)], "relu")
    conv(n, r, "side", 4, 2)
    n.nodes[-1].output[0] = "y0"
    n.op("Flatten", [r], "flat2", out="y1", axis=2)
    n.op("Reshape", [r, "shape_in"], "dynamic", out="y2")
    n.op("Reshape", [r, n.ints("t_mix", [0, 3, 4, 4])], "mixing", out="y3")
    model = n.model(
        {"x": ["N", 3, 4, 3], "shape_in": [4]},
        {"y0": None, "y1": None, "y2": None, "y3": None},
    )
    ug = units.analyze(model)
    why = {u.frozen for u in units_of(ug, "conv")}
    assert len(why) == 1 and why.pop().startswith("flatten axis != 1")
    for drop, words in (
        (["flat2"], "dynamic target shape"),
        (["flat2", "dynamic"], "reshape mixes channels"),
    ):
        m = _without(model, drop)
        us = units_of(units.analyze(m), "conv")
        assert len(us) == 4 and frozen_with(us, words), reasons(us)
    n = Net(6)  # Flatten of a map with dynamic H, W
    r = n.op("Relu", [conv(n, "x", "conv", 3, 4)], "relu")
    conv(n, r, "side", 4, 2)
    n.nodes[-1].output[0] = "y0"
    n.op("Flatten", [r], "flat", out="y1", axis=1)
    us = units_of(
        units.analyze(n.model({"x": ["N", 3, "H", "W"]}, {"y0": None, "y1": None})), "conv"
    )
    assert frozen_with(us, "dynamic spatial shape", "Flatten 'flat'"), reasons(us)


def _without(model, names):
    m = copy.deepcopy(model)
    gone = {o for nd in m.graph.node if nd.name in names for o in nd.output}
    keep = [nd for nd in m.graph.node if nd.name not in names]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    outs = [o for o in m.graph.output if o.name not in gone]
    del m.graph.output[:]
    m.graph.output.extend(outs)
    return m


# --- Squeeze / Unsqueeze / Gather ------------------------------------------------------------


@pytest.mark.parametrize("opset", [11, 17])
def test_squeeze_after_pooling_and_unsqueeze_before_a_conv(opset):
    """conv(3->6) -> Relu -> GAP -> Squeeze(2, 3) -> Gemm(6->8) -> Relu -> Unsqueeze(2, 3) ->
    conv(8->2) = y; axes as attributes (opset 11) or inputs (opset 13+)."""
    n = Net(7)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 6, 3)], "relu")
    g = n.op("GlobalAveragePool", [r], "gap")
    axes = {"axes": [2, 3]} if opset < 13 else {}
    extra = [n.ints("axes23", [2, 3])] if opset >= 13 else []
    s = n.op("Squeeze", [g, *extra], "squeeze", **axes)
    h = n.op("Relu", [gemm(n, s, "fc", 6, 8)], "relu_fc")
    u = n.op("Unsqueeze", [h, *extra], "unsqueeze", **axes)
    conv(n, u, "conv2", 8, 2)
    n.nodes[-1].output[0] = "y"
    model = n.model({"x": ["N", 3, 4, 4]}, {"y": None}, opset=opset)
    ug = units.analyze(model)
    all_prunable(ug, "conv1", 6)
    all_prunable(ug, "fc", 8)
    assert ug.layouts["squeeze"].axis == 1 and ug.layouts["unsqueeze"].axis == 1
    assert cut_read_by(ug, "conv2").tensor == "unsqueeze"
    check_random_plans(model, feeds_for(model))


def test_squeeze_without_axes_and_on_tokens():
    """[B, 1, T, D] tokens: Squeeze() drops the 1, the channel axis moves from 3 to 2;
    Unsqueeze(1) moves it back."""
    n = Net(8)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")], "relu")
    s = n.op("Squeeze", [h], "squeeze")
    u = n.op("Unsqueeze", [s, n.ints("axes", [1])], "unsqueeze")
    m = n.op("MatMul", [s, n.w("w2", 6, 3)], "fc2", out="y")
    n.op("MatMul", [u, n.w("w3", 6, 3)], "fc3", out="y2")
    model = n.model({"x": [2, 1, 5, 4]}, {m: None, "y2": None})
    ug = units.analyze(model)
    all_prunable(ug, "fc1", 6)
    assert ug.layouts["squeeze"].axis == 2 and ug.layouts["unsqueeze"].axis == 3
    check_random_plans(model, feeds_for(model, batch=2))


@pytest.mark.parametrize("opset", [11, 17])
def test_squeeze_without_axes_keeps_a_last_channel(opset):
    """Squeeze() drops every size-1 axis: after slicing to one channel the compiled model must
    keep the channel axis (the inferred axes are written out)."""
    n = Net(8)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")], "relu")
    s = n.op("Squeeze", [h], "squeeze")
    n.op("MatMul", [s, n.w("w2", 6, 3)], "fc2", out="y")
    model = n.model({"x": [2, 1, 5, 4]}, {"y": None}, opset=opset)
    ug = units.analyze(model)
    fc1 = all_prunable(ug, "fc1", 6)
    plan = Plan()
    for u in fc1[1:]:
        plan.set_constant(u.id, {"squeeze": 0.5})
    compiled = check_plan(ug, plan, feeds_for(model, batch=2))
    dims = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in infer_shapes(compiled).graph.value_info
    }
    assert dims["squeeze"] == [2, 5, 1]


def test_squeeze_and_unsqueeze_refusals():
    n = Net(9)
    g = n.op("Relu", [n.op("Gemm", ["x", n.w("w1", 1, 4)], "one", transB=1)], "r")
    n.op("Gemm", [g, n.w("w2", 2, 1)], "side", out="y0", transB=1)
    n.op("Squeeze", [g, n.ints("ax1", [1])], "drop_channels", out="y1")
    n.op("Unsqueeze", [g, n.ints("ax0", [0])], "new_batch", out="y2")
    model = n.model({"x": [3, 4]}, {"y0": None, "y1": None, "y2": None})
    us = units_of(units.analyze(model), "one")
    assert frozen_with(us, "acts on the batch or channel axis", "Squeeze"), reasons(us)
    us = units_of(units.analyze(_without(model, ["drop_channels"])), "one")
    assert frozen_with(us, "acts on the batch or channel axis", "Unsqueeze"), reasons(us)


@pytest.mark.parametrize(
    "index", [np.int64(0), np.array([0]), np.array([0, 2])], ids=["scalar", "one", "two"]
)
def test_gather_of_a_class_token(index):
    """[B, T, D] -> Gather(axis 1): a scalar index drops T (channels move to axis 1), a vector
    keeps it."""
    n = Net(10)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")], "relu")
    c = n.op("Gather", [h, n.tensor("idx", index)], "cls", axis=1)
    n.op("MatMul", [c, n.w("w2", 6, 3)], "head", out="y")
    model = n.model({"x": ["B", 5, 4]}, {"y": None})
    ug = units.analyze(model)
    all_prunable(ug, "fc1", 6)
    assert ug.layouts["cls"].axis == (1 if index.ndim == 0 else 2)
    check_random_plans(model, feeds_for(model, batch=2))


def test_gather_refusals():
    n = Net(11)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")], "relu")
    n.op("MatMul", [h, n.w("w2", 6, 3)], "side", out="y0")
    n.op("Gather", [h, n.ints("idx", [1, 3])], "pick_channels", out="y1", axis=2)
    n.op("Gather", [h, "dyn_idx"], "dynamic", out="y2", axis=1)
    model = n.model({"x": ["B", 5, 4], "dyn_idx": None}, {"y0": None, "y1": None, "y2": None})
    model.graph.input[1].type.tensor_type.elem_type = 7  # int64
    del model.graph.input[1].type.tensor_type.shape.dim[:]
    us = units_of(units.analyze(model), "fc1")
    assert frozen_with(us, "gathers along the batch or channel axis"), reasons(us)
    us = units_of(units.analyze(_without(model, ["pick_channels"])), "fc1")
    assert frozen_with(us, "dynamic indices", "Gather 'dynamic'"), reasons(us)


# --- Concat / Split ------------------------------------------------------------------------


def concat_net(with_input: bool = False):
    """conv_a(3->4), conv_b(3->6) -> Relu each -> Concat(axis 1) [+ x] -> conv_c(->5) -> Relu
    -> conv_d(5->2) = y."""
    n = Net(12)
    a = n.op("Relu", [conv(n, "x", "conv_a", 3, 4)], "ra")
    b = n.op("Relu", [conv(n, "x", "conv_b", 3, 6, 3)], "rb")
    cat = n.op("Concat", [a, "x", b] if with_input else [a, b], "cat", axis=1)
    cin = 13 if with_input else 10
    r = n.op("Relu", [conv(n, cat, "conv_c", cin, 5)], "rc")
    conv(n, r, "conv_d", 5, 2)
    n.nodes[-1].output[0] = "y"
    return n.model({"x": ["N", 3, 4, 4]}, {"y": None})


def test_concat_along_channels_joins_units():
    model = concat_net()
    ug = units.analyze(model)
    a, b = all_prunable(ug, "conv_a", 4), all_prunable(ug, "conv_b", 6)
    assert cut_read_by(ug, "conv_c").units == [u.id for u in a + b]
    check_random_plans(model, feeds_for(model))


def test_concat_drops_an_input_whose_channels_are_all_removed():
    model = concat_net()
    ug = units.analyze(model)
    plan = Plan()
    for u in units_of(ug, "conv_a"):
        plan.set_constant(u.id, {"cat": 0.25})
    compiled = check_plan(ug, plan, feeds_for(model))
    cat = next(nd for nd in compiled.graph.node if nd.name == "cat")
    assert list(cat.input) == ["rb"]
    assert "conv_a" not in {nd.name for nd in compiled.graph.node}


def test_concat_with_an_unlabelled_input_freezes_its_part():
    model = concat_net(with_input=True)
    ug = units.analyze(model)
    cut = cut_read_by(ug, "conv_c")
    assert len(cut.units) == 13
    anon = [ug.units[u] for u in cut.units[4:7]]
    assert frozen_with(anon, "concatenated with unlabelled 'x'"), reasons(anon)
    all_prunable(ug, "conv_a", 4)
    all_prunable(ug, "conv_b", 6)
    check_random_plans(model, feeds_for(model))


def test_concat_of_flattened_maps_into_a_dense_head():
    """Two convs flattened (blocks of 4) and concatenated on axis 1 -> Gemm: one cut holding
    both convs' units, 4 features each."""
    n = Net(19)
    a = n.op("Flatten", [n.op("Relu", [conv(n, "x", "conv_a", 3, 3)], "ra")], "fa", axis=1)
    b = n.op("Flatten", [n.op("Relu", [conv(n, "x", "conv_b", 3, 5, 3)], "rb")], "fb", axis=1)
    cat = n.op("Concat", [a, b], "cat", axis=1)
    gemm(n, cat, "fc", 32, 2, out="y")
    model = n.model({"x": ["N", 3, 2, 2]}, {"y": ["N", 2]})
    ug = units.analyze(model)
    ua, ub = all_prunable(ug, "conv_a", 3), all_prunable(ug, "conv_b", 5)
    cut = cut_read_by(ug, "fc")
    assert cut.block == 4 and cut.units == [u.id for u in ua + ub]
    check_random_plans(model, feeds_for(model))


def test_concat_along_tokens_unifies_the_parts():
    """Two [B, T, D] streams concatenated along T share their channels (units unified)."""
    n = Net(13)
    a = n.op("MatMul", ["x", n.w("wa", 4, 6)], "fa")
    b = n.op("MatMul", ["x", n.w("wb", 4, 6)], "fb")
    cat = n.op("Concat", [a, b], "cat", axis=1)
    n.op("MatMul", [n.op("Relu", [cat], "relu"), n.w("wo", 6, 3)], "head", out="y")
    n.op("Concat", [a, n.b("tok", 2, 1, 6)], "with_const", out="y2", axis=1)
    model = n.model({"x": [2, 5, 4]}, {"y": None, "y2": None})
    ug = units.analyze(model)
    us = units_of(ug, "fa")
    assert all({p for p, _ in u.producers} == {"fa", "fb"} for u in us)
    assert frozen_with(us, "non-channel axis with unlabelled parts"), reasons(us)
    check_random_plans(_without(model, ["with_const"]), feeds_for(model, batch=2))


@pytest.mark.parametrize("opset", [11, 17, 18])
def test_split_along_channels_divides_units(opset):
    """conv(3->8) -> Relu -> Split([3, 5], axis 1; opset 18: num_outputs=2, [4, 4]) ->
    conv_a, conv_b (->2) -> Add = y."""
    n = Net(14)
    r = n.op("Relu", [conv(n, "x", "conv", 3, 8, 3)], "relu")
    first = 4 if opset >= 18 else 3
    attrs = {"split": [3, 5]} if opset < 13 else {"num_outputs": 2} if opset >= 18 else {}
    extra = [n.ints("sizes", [3, 5])] if opset in (13, 17) else []
    p, q = n.op("Split", [r, *extra], "split", n_out=2, axis=1, **attrs)
    a, b = conv(n, p, "conv_a", first, 2), conv(n, q, "conv_b", 8 - first, 2)
    n.op("Add", [a, b], "sum", out="y")
    model = n.model({"x": ["N", 3, 4, 4]}, {"y": None}, opset=opset)
    ug = units.analyze(model)
    us = all_prunable(ug, "conv", 8)
    assert cut_read_by(ug, "conv_a").units == [u.id for u in us[:first]]
    assert cut_read_by(ug, "conv_b").units == [u.id for u in us[first:]]
    check_random_plans(model, feeds_for(model))


def test_split_along_positions_and_refusals():
    """[B, T, D]: Split along T keeps the channels on both parts; a flattened block split in
    the middle of a channel is refused."""
    n = Net(15)
    h = n.op("Relu", [n.op("MatMul", ["x", n.w("w1", 4, 6)], "fc1")], "relu")
    p, q = n.op("Split", [h, n.ints("sizes", [2, 3])], "split_t", n_out=2, axis=1)
    n.op(
        "Add",
        [
            n.op("MatMul", [p, n.w("wp", 6, 3)], "mp"),
            n.op(
                "ReduceMean",
                [n.op("MatMul", [q, n.w("wq", 6, 3)], "mq")],
                "mean",
                axes=[1],
                keepdims=1,
            ),
        ],
        "sum",
        out="y",
    )
    model = n.model({"x": ["B", 5, 4]}, {"y": None})
    ug = units.analyze(model)
    us = all_prunable(ug, "fc1", 6)
    assert cut_read_by(ug, "mp").units == cut_read_by(ug, "mq").units == [u.id for u in us]
    check_random_plans(model, feeds_for(model, batch=2))

    n = Net(16)
    r = n.op("Relu", [conv(n, "x", "conv", 3, 2)], "relu")
    f = n.op("Flatten", [r], "flat", axis=1)  # 2 channels x 4 positions
    n.op("Gemm", [f, n.w("ws", 3, 8)], "side", out="y0", transB=1)
    n.op("Split", [f, n.ints("sizes", [3, 5])], "split", n_out=2, axis=1)
    outs = {"y0": None, "split:0": None, "split:1": None}
    us = units_of(units.analyze(n.model({"x": ["N", 3, 2, 2]}, outs)), "conv")
    assert frozen_with(us, "split divides a channel's block"), reasons(us)


# --- Slice / Pad / Resize ------------------------------------------------------------------


def spatial_net(op: str, opset: int = 17):
    """conv(3->6, 3x3) -> Relu -> `op` on the spatial axes -> conv(6->4, 3x3) -> Relu -> conv
    (4->2) = y."""
    n = Net(17)
    r = n.op("Relu", [conv(n, "x", "conv1", 3, 6, 3)], "relu")
    if op == "Slice":
        s = n.op(
            "Slice", [r, n.ints("st", [1, 0]), n.ints("en", [5, 4]), n.ints("ax", [2, -1])], "slice"
        )
    elif op == "Pad":
        s = n.op(
            "Pad",
            [r, n.ints("pads", [0, 0, 1, 2, 0, 0, 2, 1]), n.tensor("value", np.float32(0.5))],
            "pad",
        )
    elif op == "Pad-reflect":
        s = n.op("Pad", [r, n.ints("pads", [0, 0, 1, 1, 0, 0, 1, 1])], "pad", mode="reflect")
    elif op == "Resize-scales":
        s = n.op(
            "Resize",
            [r, "", n.tensor("scales", np.array([1, 1, 2, 2], np.float32))],
            "resize",
            mode="nearest",
        )
    elif op == "Resize-sizes":
        s = n.op("Resize", [r, "", "", n.ints("sizes", [2, 6, 7, 9])], "resize", mode="linear")
    elif op == "Resize-runtime":  # torch's interpolate(size=...) with a dynamic batch (CRAFT)
        lead = n.op("Slice", [n.op("Shape", [r], "shape"), n.ints("s0", [0]), n.ints("s2", [2])],
                    "lead")  # fmt: skip
        sizes = n.op("Concat", [lead, n.ints("hw", [7, 9])], "sizes", axis=0)
        s = n.op("Resize", [r, "", "", sizes], "resize", mode="linear")
    else:
        raise AssertionError(op)
    r2 = n.op("Relu", [conv(n, s, "conv2", 6, 4, 3)], "relu2")
    conv(n, r2, "conv3", 4, 2)
    n.nodes[-1].output[0] = "y"
    return n.model({"x": [2, 3, 5, 4]}, {"y": None}, opset=opset)


@pytest.mark.parametrize(
    "op",
    ["Slice", "Pad", "Pad-reflect", "Resize-scales", "Resize-sizes", "Resize-runtime"],
)
def test_spatial_ops_keep_the_layout(op):
    model = spatial_net(op)
    ug = units.analyze(model)
    us = all_prunable(ug, "conv1", 6)
    cut = cut_read_by(ug, "conv2")
    assert cut.tensor == op.split("-")[0].lower() and cut.units == [u.id for u in us]
    check_random_plans(model, feeds_for(model, batch=2))


def test_slice_pad_resize_of_channels_are_refused():
    n = Net(18)
    r = n.op("Relu", [conv(n, "x", "conv", 3, 6)], "relu")
    conv(n, r, "side", 6, 2)
    n.nodes[-1].output[0] = "y0"
    n.op("Slice", [r, n.ints("st", [0]), n.ints("en", [3]), n.ints("ax", [1])], "s", out="y1")
    n.op("Pad", [r, n.ints("pads", [0, 1, 0, 0, 0, 1, 0, 0])], "p", out="y2")
    n.op(
        "Resize",
        [r, "", n.tensor("scales", np.array([1, 2, 1, 1], np.float32))],
        "z",
        out="y3",
        mode="nearest",
    )
    # default axes (0, 1, 2) include the batch and channel axes, even over their full range
    n.op("Slice", [r, n.ints("st3", [0, 0, 1]), n.ints("en3", [9, 99, 3])], "d", out="y4")
    model = n.model({"x": [2, 3, 4, 4]}, {f"y{i}": None for i in range(5)})
    for name, words in (
        ("s", "slices the channel axis"),
        ("p", "pads the channel axis"),
        ("z", "resizes the channel axis"),
        ("d", "slices the channel axis"),
    ):
        others = [o for o in ("s", "p", "z", "d") if o != name]
        us = units_of(units.analyze(_without(model, others)), "conv")
        assert len(us) == 6 and frozen_with(us, words, f"'{name}'"), (name, reasons(us))
