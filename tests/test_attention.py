"""Attention heads as units (issue 12): a head spans its channels of Q, K, V and the merged
context; removing heads compiles exactly, with constant and run-time head-split targets and
static or dynamic sequence length."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import attention_block
from plans import random_plan

from scmopt import units
from scmopt.cli import main
from scmopt.compiler.compile import compile_plan
from scmopt.io.graph import canonicalize, infer_shapes
from scmopt.ops.cost import count_params
from scmopt.plan import Plan
from scmopt.runtime.hooks import simulate
from scmopt.runtime.sessions import session

VARIANTS = [
    pytest.param(rt, seq, id=f"{'runtime' if rt else 'const'}-T{seq}")
    for rt in (False, True)
    for seq in (5, "T")
]


def _feeds(batch: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.where(rng.random((batch, 1, 1, t)) < 0.2, -1e4, 0.0).astype(np.float32)
    return {"x": rng.standard_normal((batch, t, 16)).astype(np.float32), "mask": mask}


def _err(a: onnx.ModelProto, b: onnx.ModelProto, feeds) -> float:
    ya, yb = session(a).run(None, feeds)[0], session(b).run(None, feeds)[0]
    return float(np.abs(ya - yb).max() / np.abs(yb).max())


@pytest.mark.parametrize(("runtime", "seq"), VARIANTS)
def test_heads_are_units_spanning_q_k_v(runtime, seq):
    ug = units.analyze(attention_block(runtime_targets=runtime, seq=seq))
    heads = [u for u in ug.units.values() if u.kind == "head"]
    assert len(heads) == 4 and all(u.prunable for u in heads)
    for h in heads:
        assert {p for p, _ in h.producers} == {"q_proj", "k_proj", "v_proj"}
        assert len(h.producers) == 12  # Dh = 4 channels of each projection
        assert h.cuts == ["merged"]
    assert ug.cuts["merged"].block == 4
    ffn = [u for u in ug.units.values() if u.cuts == ["gelu"]]
    assert len(ffn) == 32 and all(u.prunable and u.kind == "token" for u in ffn)
    residual = [u for u in ug.units.values() if not u.prunable]
    assert len(residual) == 48
    assert all("LayerNormalization" in u.frozen for u in residual)


@pytest.mark.parametrize(("runtime", "seq"), VARIANTS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_plans_compile_exactly(runtime, seq, seed):
    model = attention_block(runtime_targets=runtime, seq=seq)
    ug = units.analyze(model)
    plan = random_plan(ug, 0.5, seed=seed)
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    for t in [5] if seq == 5 else [3, 9]:
        assert _err(compiled, simulate(ug, plan), _feeds(6, t, seed)) <= 1e-5
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in compiled.graph.input}  # fmt: skip
    assert dims == {"x": ["B", seq, 16], "mask": ["B", 1, 1, seq]}


@pytest.mark.parametrize("seed", [0, 1])
def test_hugging_face_sdpa_export_shapes_heads_are_units_and_compile_exactly(seed):
    """HF's SDPA attention exported by TorchScript: head split targets [B, T, -1, Dh] built at
    run time (ONNX inference leaves the head axis unknown: onnxruntime's symbolic inference
    fills it in), Where(IsNaN(probs), 0, probs), a no-op Reshape(B, -1, T, Dh) of the
    context. Without those three each head froze ("cannot be sliced" at the context MatMul)."""
    model = attention_block(hf_style=True, seq="T", layers=2)
    ug = units.analyze(model)
    heads = [u for u in ug.units.values() if u.kind == "head"]
    assert len(heads) == 8 and all(u.frozen is None for u in heads)
    plan = random_plan(ug, 0.5, seed=seed)
    assert any(u.kind == "head" for u in map(ug.units.get, plan.removed))
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    for t in (3, 9):
        assert _err(compiled, simulate(ug, plan), _feeds(6, t, seed)) <= 1e-5


@pytest.mark.parametrize("hf_style", [False, True])
def test_dynamo_key_transpose_through_a_batch_merge_keeps_heads_units(hf_style):
    """The dynamo SDPA lowering's K^T, Reshape([-1, T, Dh]) -> Transpose([0, 2, 1]) ->
    Reshape([B, H, Dh, T]), merges batch and heads; canonicalize makes it one Transpose
    [0, 1, 3, 2] (io.rewrites.key_transpose), computing the same. Without it every head froze
    (0/16 on HF BertModel / ViTModel dynamo exports)."""
    model = attention_block(dynamo_kt=True, hf_style=hf_style, seq="T", layers=2)
    canon = canonicalize(model)
    perms = [list(n.attribute[0].ints) for n in canon.graph.node if n.op_type == "Transpose"]
    assert perms.count([0, 1, 3, 2]) == 2 and [0, 2, 1] not in perms
    feeds = _feeds(5, 7, 0)
    want, got = session(model).run(None, feeds)[0], session(canon).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    ug = units.analyze(model)
    heads = [u for u in ug.units.values() if u.kind == "head"]
    assert len(heads) == 8 and all(u.frozen is None for u in heads)
    plan = random_plan(ug, 0.5, seed=1)
    assert any(u.kind == "head" for u in map(ug.units.get, plan.removed))
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    for t in (3, 9):
        assert _err(compiled, simulate(ug, plan), _feeds(6, t, 1)) <= 1e-5


def test_key_transpose_rewrite_refuses_a_merge_that_is_not_batch_and_heads():
    """A Reshape -> Transpose([0, 2, 1]) -> Reshape chain whose end does not restore the
    input's leading (B, H) is a different function: left alone."""
    import onnx_graphsurgeon as gs

    from scmopt.io.rewrites.key_transpose import rewrite as fold_key_transpose

    x = gs.Variable("x", np.float32, ["B", 4, 6, 2])
    mid = gs.Variable("m", np.float32, ["BH", 6, 2])
    t = gs.Variable("t", np.float32, ["BH", 2, 6])
    y = gs.Variable("y", np.float32, ["B", 2, 4, 6])  # heads and Dh swapped: not K^T
    c1 = gs.Constant("c1", np.array([-1, 6, 2], np.int64))
    c2 = gs.Constant("c2", np.array([0, 2, 4, 6], np.int64))
    nodes = [gs.Node("Reshape", "r1", inputs=[x, c1], outputs=[mid]),
             gs.Node("Transpose", "tr", {"perm": [0, 2, 1]}, [mid], [t]),
             gs.Node("Reshape", "r2", inputs=[t, c2], outputs=[y])]  # fmt: skip
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[y])
    assert fold_key_transpose(graph) == 0
    assert [n.op for n in graph.nodes] == ["Reshape", "Transpose", "Reshape"]


@pytest.mark.parametrize("runtime", [False, True])
def test_removing_heads_slices_q_k_v_and_rewrites_head_counts(runtime):
    ug = units.analyze(attention_block(runtime_targets=runtime, seq="T"))
    heads = ug.cuts["merged"].units
    plan = Plan()
    plan.set_constant(heads[1], {"merged": 0.25})
    plan.set_folded(heads[3], {"merged": ({heads[0]: 0.5, heads[2]: -0.2}, 0.1)})
    compiled = compile_plan(ug, plan).model
    # 2 of 4 heads gone: 3 x (16 x 8 + 8) projection weights and biases, 8 x 16 out rows
    assert count_params(ug.model) - count_params(compiled) == 3 * (16 * 8 + 8) + 8 * 16
    for t in (2, 7):
        assert _err(compiled, simulate(ug, plan), _feeds(3, t)) <= 1e-5
    assert not compiled.graph.value_info  # the artifact carries no intermediate shapes
    shapes = {vi.name: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
              for vi in infer_shapes(compiled).graph.value_info}  # fmt: skip
    assert shapes["scores"][1] == 2  # two heads left in the attention scores


def test_inspect_names_heads_and_the_softmax_reason(tmp_path):
    path = tmp_path / "att.onnx"
    onnx.save(attention_block(runtime_targets=True, seq="T"), path)
    res = CliRunner().invoke(main, ["inspect", str(path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "attention heads: 4 (4 prunable)" in res.output
    assert "softmax is not linear" in res.output
    assert "LayerNormalization: it normalises over the hidden axis" in res.output
    res = CliRunner().invoke(main, ["inspect", "--json", str(path)], catch_exceptions=False)
    kinds = json.loads(res.output)["unit_kinds"]
    assert sorted(kinds.values()).count("head") == 4


def test_non_uniform_head_counts_with_one_shared_run_time_target():
    """Every head split of both layers reads one Concat target; removing 1 head in layer 0 and
    3 in layer 1 rewrites each reshape's own copy."""
    model = attention_block(runtime_targets=True, seq="T", layers=2, shared_target=True)
    ug = units.analyze(model)
    assert sum(u.kind == "head" for u in ug.units.values()) == 8
    h0, h1 = ug.cuts["l0.merged"].units, ug.cuts["l1.merged"].units
    plan = Plan().set_constant(h0[2], {"l0.merged": 0.1})
    for u in h1[:3]:
        plan.set_constant(u, {"l1.merged": -0.2})
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    for t in (4, 6):
        assert _err(compiled, simulate(ug, plan), _feeds(3, t)) <= 1e-5
    shapes = {vi.name: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
              for vi in infer_shapes(compiled).graph.value_info}  # fmt: skip
    assert shapes["l0.scores"][1] == 3 and shapes["l1.scores"][1] == 1
