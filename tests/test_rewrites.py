"""Load-time rewrites (scmopt.io.rewrites): fused QKV projections (timm, Paddle, GPT-2) and
Gemms over flattened tokens (GPT-2's Conv1D) become forms whose heads and FFN neurons are
units; each rewrite computes what the export does, and compile == simulation on top of it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from graphs import fused_attention
from helpers import io_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plans import random_plan

from scmopt import units
from scmopt.compiler.compile import compile_plan
from scmopt.io.rewrites import fused_qkv, split_projection, token_gemm
from scmopt.runtime.hooks import simulate
from scmopt.runtime.sessions import session

VARIANTS = [
    pytest.param(q, c, seq, id=f"{q}-{'conv1d' if c else 'matmul'}-T{seq}")
    for q in ("split", "gather", "slice", "last_axis")
    for c in (False, True)
    for seq in (5, "T")
]


def _x(batch: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, t, 16)).astype(np.float32)}


def _y(model: onnx.ModelProto, feeds) -> np.ndarray:
    return session(model).run(None, feeds)[0]


@pytest.mark.parametrize(("qkv", "conv1d", "seq"), VARIANTS)
def test_fused_projections_become_heads_and_compute_the_same(qkv, conv1d, seq):
    model = fused_attention(qkv=qkv, conv1d=conv1d, seq=seq)
    ug = units.analyze(model)
    heads = [u for u in ug.units.values() if u.kind == "head"]
    assert len(heads) == 4 and all(u.prunable for u in heads)
    for h in heads:  # one projection per part, Dh = 4 channels of each
        assert len({p for p, _ in h.producers}) == 3 and len(h.producers) == 12
    ffn = [u for u in ug.units.values() if u.prunable and u.kind != "head"]
    assert len(ffn) == 24  # the FFN's neurons; the residual stream stays frozen
    ops = {n.op_type for n in ug.model.graph.node}
    assert "Split" not in ops  # one projection per part
    assert sum(n.op_type == "Gemm" for n in ug.model.graph.node) == 1  # the classifier's only
    for t in (5,) if seq == 5 else (5, 9):
        feeds = _x(3, t, seed=t)
        np.testing.assert_allclose(_y(ug.model, feeds), _y(model, feeds), rtol=1e-5, atol=1e-6)
    assert io_signature(ug.model) == io_signature(model)


@pytest.fixture(scope="module", params=["split", "slice", "last_axis"])
def fused(request):
    return units.analyze(fused_attention(qkv=request.param, conv1d=True, seq="T"))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), fraction=st.floats(0.1, 0.9))
def test_random_plans_compile_to_the_simulation(fused, seed, fraction):
    ug = fused
    plan = random_plan(ug, fraction, seed=seed)
    compiled = compile_plan(ug, plan).model
    onnx.checker.check_model(compiled, full_check=True)
    ref = simulate(ug, plan)
    for b, t in ((2, 5), (3, 8)):
        feeds = _x(b, t, seed=seed)
        ya, yb = _y(compiled, feeds), _y(ref, feeds)
        assert np.abs(ya - yb).max() <= 1e-5 * max(1.0, np.abs(yb).max())
    kept = {u for u in ug.units if ug.units[u].kind == "head"} - set(plan.actions)
    # each projection keeps Dh = 4 columns per kept head
    widths = {n.name: numpy_cols(compiled, n) for n in compiled.graph.node if n.op_type == "MatMul"}
    qkv = [w for name, w in widths.items() if "qkv" in name and w is not None]
    assert qkv and all(w == 4 * len(kept) for w in qkv)


def numpy_cols(model: onnx.ModelProto, node: onnx.NodeProto) -> int | None:
    inits = {i.name: i for i in model.graph.initializer}
    w = inits.get(node.input[1])
    return int(w.dims[1]) if w is not None and len(w.dims) == 2 else None


# ---- refusals: graphs that look alike but compute something else are left alone


def _graph(nodes: list[gs.Node], inputs: list[gs.Tensor], outputs: list[gs.Tensor]) -> gs.Graph:
    return gs.Graph(nodes=nodes, inputs=inputs, outputs=outputs, opset=17)


def _projection_split(axis: int, t_is_output: bool) -> tuple[gs.Graph, gs.Node]:
    x = gs.Variable("x", np.float32, ["B", 5, 4])
    t = gs.Variable("t", np.float32, ["B", 5, 6])
    a, b = (gs.Variable(n, np.float32, ["B", 5, 3]) for n in "ab")
    nodes = [gs.Node("MatMul", "mm", inputs=[x, gs.Constant("w", np.ones((4, 6), np.float32))],
                     outputs=[t]),
             gs.Node("Split", "sp", {"axis": axis},
                     [t, gs.Constant("sizes", np.array([3, 3], np.int64))], [a, b])]  # fmt: skip
    return _graph(nodes, [x], [a, b, t] if t_is_output else [a, b])


def test_split_projection_refuses_a_split_of_another_axis_or_a_shared_output():
    assert split_projection.rewrite(_projection_split(1, False)) == 0  # splits the tokens
    assert split_projection.rewrite(_projection_split(-1, True)) == 0  # t is read too
    assert split_projection.rewrite(_projection_split(-1, False)) == 1


def _permuted(extra_reader: bool) -> gs.Graph:
    t = gs.Variable("t", np.float32, ["B", 5, 24])
    r = gs.Variable("r", np.float32, ["B", 5, 3, 2, 4])
    p = gs.Variable("p", np.float32, [3, "B", 2, 5, 4])
    q = gs.Variable("q", np.float32, ["B", 2, 5, 4])
    s = gs.Variable("s", np.float32, None)
    nodes = [gs.Node("Reshape", "rs", inputs=[t, gs.Constant("c", np.array([0, 0, 3, 2, 4]))],
                     outputs=[r]),
             gs.Node("Transpose", "tr", {"perm": fused_qkv.PERM}, [r], [p]),
             gs.Node("Gather", "g0", {"axis": 0}, [p, gs.Constant("i0", np.array(0))],
                     [q])]  # fmt: skip
    if extra_reader:
        nodes.append(gs.Node("ReduceSum", "sum", inputs=[p], outputs=[s]))
    return _graph(nodes, [t], [q, s] if extra_reader else [q])


def test_fused_qkv_refuses_another_permutation_reader():
    """A reader of the permuted [3, B, H, T, Dh] tensor that is not one of the parts (here a
    ReduceSum over it) makes the rewrite wrong: left alone."""
    assert fused_qkv.rewrite(_permuted(True)) == 0
    assert fused_qkv.rewrite(_permuted(False)) == 1


def _token_gemm(out_dims: list) -> gs.Graph:
    x = gs.Variable("x", np.float32, ["B", "T", 4])
    flat = gs.Variable("flat", np.float32, ["BT", 4])
    y = gs.Variable("y", np.float32, ["BT", 3])
    z = gs.Variable("z", np.float32, out_dims)
    nodes = [gs.Node("Reshape", "f", inputs=[x, gs.Constant("t1", np.array([-1, 4]))],
                     outputs=[flat]),
             gs.Node("Gemm", "g", inputs=[flat, gs.Constant("w", np.ones((4, 3), np.float32))],
                     outputs=[y]),
             gs.Node("Reshape", "b", inputs=[y, gs.Constant("t2", np.array([0, 0, 3]))],
                     outputs=[z])]  # fmt: skip
    return _graph(nodes, [x], [z])


def test_token_gemm_refuses_a_reshape_back_to_other_leading_dims():
    """[B, T, D] -> [B*T, D] -> Gemm -> [T, B, O] is not the per-token linear: left alone."""
    assert token_gemm.rewrite(_token_gemm(["T", "B", 3])) == 0
    assert token_gemm.rewrite(_token_gemm([None, "T", 3])) == 1  # the first follows by counting


@pytest.mark.parametrize(("start", "end"), [(2, 2**63 - 1), (-1, 2**63 - 1), (1, 2), (0, 2)])
def test_fused_qkv_reads_open_and_negative_slices(start, end):
    """qkv[2:] and qkv[-1:] (ends INT64_MAX, as exporters write open slices) take part 2;
    qkv[0:2] takes two parts at once: not a part, left alone."""
    t = gs.Variable("t", np.float32, ["B", 5, 24])
    r = gs.Variable("r", np.float32, ["B", 5, 3, 2, 4])
    p = gs.Variable("p", np.float32, [3, "B", 2, 5, 4])
    sl = gs.Variable("sl", np.float32, None)
    q = gs.Variable("q", np.float32, ["B", 2, 5, 4])
    ints = lambda name, v: gs.Constant(name, np.array([v], np.int64))  # noqa: E731
    nodes = [gs.Node("Reshape", "rs", inputs=[t, gs.Constant("c", np.array([0, 0, 3, 2, 4]))],
                     outputs=[r]),
             gs.Node("Transpose", "tr", {"perm": fused_qkv.PERM}, [r], [p]),
             gs.Node("Slice", "s", inputs=[p, ints("st", start), ints("en", end), ints("ax", 0)],
                     outputs=[sl]),
             gs.Node("Squeeze", "sq", inputs=[sl, ints("sqa", 0)], outputs=[q])]  # fmt: skip
    graph = _graph(nodes, [t], [q])
    assert fused_qkv.rewrite(graph) == (0 if end - start == 2 else 1)


def test_applied_rewrites_are_recorded_and_inspect_names_them(tmp_path):
    from click.testing import CliRunner

    from scmopt.cli import main
    from scmopt.io.graph import canonicalize, rewrites_of

    model = fused_attention(qkv="split", conv1d=True, seq="T")
    done = rewrites_of(canonicalize(model))
    # qkv, ffn_in, ffn_out and out as token Gemms; one fused split; its Split per projection
    assert done == {"fused_qkv": 1, "split_projection": 1, "token_gemm": 4}
    assert rewrites_of(canonicalize(fused_attention(qkv="last_axis"))) == {"split_projection": 1}
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    res = CliRunner().invoke(main, ["inspect", str(path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "load-time rewrites (same function; scmopt/io/rewrites): fused_qkv 1, " in res.output
