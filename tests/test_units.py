"""Unit discovery: couplings are found, unsupported ops freeze with reasons, odd formats load."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import outputs, relative_error, zoo
from light import light_model
from onnx import helper, numpy_helper, version_converter
from plans import random_plan

from scmopt import units
from scmopt.compiler.compile import compile_plan
from scmopt.io import graph
from scmopt.runtime import hooks as intervene


def test_flatten_into_gemm_makes_blocks():
    model, _ = zoo("cnn_digits")
    ug = units.analyze(model)
    flat = [c for c in ug.cuts.values() if c.block > 1]
    assert len(flat) == 1 and flat[0].block == 4 and flat[0].channels == 64


def test_residual_stream_is_one_group_spanning_several_cuts():
    model, _ = zoo("resnet_digits")
    ug = units.analyze(model)
    multi = [u for u in ug.units.values() if len(u.cuts) > 1]
    assert multi, "residual units should occupy several cuts"
    # a residual channel is produced by several convolutions (block conv + shortcut/stem)
    assert any(len(u.producers) > 1 for u in multi)


def test_squeeze_excite_gate_is_coupled_to_its_channels():
    model, _ = zoo("mobile_digits")
    ug = units.analyze(model)
    gated = [u for u in ug.units.values() if len(u.producers) > 1]
    assert gated, "SE gate producer must be unified with the gated channels"
    assert all(u.prunable for u in gated)


def test_concat_offsets_in_densenet():
    ug = units.analyze(light_model("densenet121"))
    # a dense layer's channels appear in many concatenated cuts
    assert max(len(u.cuts) for u in ug.units.values()) > 5


def test_lrn_and_grouped_conv_freeze_with_reasons():
    ug = units.analyze(light_model("bvlc_alexnet"))
    reasons = set(ug.frozen().values())
    assert any("grouped conv" in r for r in reasons)
    ug = units.analyze(light_model("inception_v1"))
    assert any("LRN" in r for r in ug.frozen().values())


def test_softmax_over_channels_freezes_its_input():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])
    w1 = numpy_helper.from_array(np.ones((4, 5), np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((5, 3), np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Softmax", ["h"], ["s"], axis=1),
        helper.make_node("MatMul", ["s", "w2"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [w1, w2]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    ug = units.analyze(model)
    assert len(ug.units) == 5 and not ug.prunable
    assert all("Softmax" in r for r in ug.frozen().values())


def _weights_as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Old exporters: weights as Constant nodes, some behind Cast/Reshape chains."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    nodes = []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 2:  # flat float64 constant -> Cast -> Reshape
            flat = numpy_helper.from_array(arr.astype(np.float64).ravel(), f"{init.name}_flat")
            shape = numpy_helper.from_array(np.array(arr.shape, np.int64), f"{init.name}_shape")
            nodes += [
                helper.make_node("Constant", [], [flat.name], value=flat),
                helper.make_node("Constant", [], [shape.name], value=shape),
                helper.make_node("Cast", [flat.name], [f"{init.name}_f32"], to=1),
                helper.make_node("Reshape", [f"{init.name}_f32", shape.name], [init.name]),
            ]
        else:
            nodes.append(helper.make_node("Constant", [], [init.name], value=init))
    del g.initializer[:]
    new = nodes + list(g.node)
    del g.node[:]
    g.node.extend(new)
    return model


def _ir3_with_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for init in model.graph.initializer:
        model.graph.input.append(
            helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        )
    model.ir_version = 3
    return model


def _fixed_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    del model.graph.value_info[:]
    return model


@pytest.mark.parametrize(
    "variant", [_weights_as_constant_nodes, _ir3_with_initializer_inputs, _fixed_batch_one]
)
@pytest.mark.parametrize("name", ["mlp_digits", "cnn_digits"])
def test_old_model_formats_compile_exactly(variant, name):
    model, feeds = zoo(name, n=1)
    old = variant(model)
    ug_ref, ug = units.analyze(model), units.analyze(old)
    assert sorted(ug.units) == sorted(ug_ref.units)
    plan = random_plan(ug, 0.5, seed=2)
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    assert relative_error(outputs(compiled, feeds), outputs(intervene.simulate(ug, plan), feeds))
    assert (
        relative_error(outputs(compiled, feeds), outputs(intervene.simulate(ug, plan), feeds))
        < 1e-5
    )


@pytest.mark.parametrize("target", [9, 11, 13, 18, 21, 22])
def test_opsets_9_to_22(target):
    model, feeds = zoo("cnn_digits", n=8)
    try:
        converted = version_converter.convert_version(model, target)
    except RuntimeError:  # no down-adapter: Conv/Relu/MaxPool/Flatten/Gemm mean the same in 9-22
        converted = onnx.ModelProto.FromString(model.SerializeToString())
        converted.opset_import[0].version = target
        for node in converted.graph.node:  # MaxPool's defaulted ceil_mode/dilations are newer
            kept = [a for a in node.attribute if a.name not in ("ceil_mode", "dilations")]
            del node.attribute[:]
            node.attribute.extend(kept)
    onnx.checker.check_model(converted, full_check=True)
    ug = units.analyze(converted)
    assert ug.summary()["prunable_fraction"] == 1.0
    plan = random_plan(ug, 0.5, seed=target)
    compiled = compile_plan(ug, plan).model
    assert graph.opset(compiled) == target
    err = relative_error(outputs(compiled, feeds), outputs(intervene.simulate(ug, plan), feeds))
    assert err < 1e-5


def test_external_data_model_round_trip(tmp_path):
    model, feeds = zoo("mlp_digits", n=8)
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="ext.data",
                    size_threshold=0)  # fmt: skip
    assert (tmp_path / "ext.data").exists()
    loaded = graph.load(path)
    ug = units.analyze(loaded)
    plan = random_plan(ug, 0.5, seed=0)
    out = tmp_path / "out.onnx"
    graph.save(compile_plan(ug, plan).model, out)
    err = relative_error(
        outputs(onnx.load(str(out)), feeds), outputs(intervene.simulate(ug, plan), feeds)
    )
    assert err < 1e-5
