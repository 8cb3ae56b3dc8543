"""units.layout: the [N, C, P] view of a cut (numpy and ONNX agree, and invert), the layout a
Reshape/Flatten derives or refuses, and the slicing / weight-row helpers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from scmopt.runtime.sessions import session
from scmopt.units.layout import Layout, reshape_layout

F = TensorProto.FLOAT


def labels(c: int) -> list[str]:
    return [f"u{i}" for i in range(c)]


def channels_last_flat(h: int, w: int, c: int) -> Layout:
    """[N, H*W*C] from a row-major flatten of [N, H, W, C]: chan = f % C, pos = f // C."""
    f = np.arange(h * w * c)
    return Layout(1, f % c, f // c, labels(c))


def explicit_ncp(lay: Layout, x: np.ndarray) -> np.ndarray:
    """The [N, C, P] view by its definition: value (c, j * R + r) is the feature of channel c
    at block position j, at flat position r of the remaining axes."""
    n = x.shape[0]
    rest = [a for a in range(1, x.ndim) if a != lay.axis]
    moved = np.transpose(x, [0, lay.axis, *rest]).reshape(n, lay.features, -1)
    r = moved.shape[2]
    out = np.empty((n, lay.channels, lay.block * r), x.dtype)
    for f in range(lay.features):
        c, j = int(lay.chan[f]), int(lay.pos[f])
        out[:, c, j * r : (j + 1) * r] = moved[:, f]
    return out


# --- ONNX nodes of the view -----------------------------------------------------------------


class _Emitter:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def __call__(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{len(self.nodes)}", **attrs))
        return out


def _model(em: _Emitter, inputs: list[tuple[str, int]], out: tuple[str, int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        em.nodes,
        "view",
        [helper.make_tensor_value_info(name, F, [None] * r) for name, r in inputs],
        [helper.make_tensor_value_info(out[0], F, [None] * out[1])],
        em.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_to_ncp(lay: Layout, x: np.ndarray) -> np.ndarray:
    em = _Emitter()
    out = lay.onnx_to_ncp("x", x.ndim, "t", em, em.inits)
    model = _model(em, [("x", x.ndim)], (out, 3))
    return session(model, device="cpu").run(None, {"x": x})[0]


def onnx_from_ncp(lay: Layout, v: np.ndarray, orig: np.ndarray) -> np.ndarray:
    em = _Emitter()
    out = lay.onnx_from_ncp("v", "orig", orig.ndim, "y", "t", em, em.inits)
    assert out == "y"
    model = _model(em, [("v", 3), ("orig", orig.ndim)], ("y", orig.ndim))
    return session(model, device="cpu").run(None, {"v": v, "orig": orig})[0]


def check_view(lay: Layout, shape: tuple[int, ...], seed: int = 0) -> None:
    """numpy view = its definition = the ONNX nodes; from_ncp inverts it (numpy and ONNX)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    v = lay.to_ncp(x)
    p = int(np.prod(shape[1:])) // lay.channels
    assert v.shape == (shape[0], lay.channels, p)
    np.testing.assert_array_equal(v, explicit_ncp(lay, x))
    np.testing.assert_array_equal(onnx_to_ncp(lay, x), v)
    np.testing.assert_array_equal(lay.from_ncp(v, x.shape), x)
    other = rng.standard_normal(v.shape).astype(np.float32)
    back = lay.from_ncp(other, x.shape)
    assert back.shape == x.shape
    np.testing.assert_array_equal(lay.to_ncp(back), other)
    np.testing.assert_array_equal(onnx_from_ncp(lay, other, x), back)


def test_nchw_axis_1_is_a_plain_reshape():
    lay = Layout.simple(labels(4))
    assert lay.major and lay.block == 1
    x = np.arange(2 * 4 * 3 * 5, dtype=np.float32).reshape(2, 4, 3, 5)
    np.testing.assert_array_equal(lay.to_ncp(x), x.reshape(2, 4, 15))
    check_view(lay, (2, 4, 3, 5))


def test_nhwc_axis_3_moves_channels_first():
    lay = Layout.simple(labels(4), axis=3)
    x = np.arange(2 * 3 * 5 * 4, dtype=np.float32).reshape(2, 3, 5, 4)
    np.testing.assert_array_equal(lay.to_ncp(x), x.transpose(0, 3, 1, 2).reshape(2, 4, 15))
    check_view(lay, (2, 3, 5, 4))


def test_tokens_axis_2_of_btd():
    lay = Layout.simple(labels(6), axis=2)
    x = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    np.testing.assert_array_equal(lay.to_ncp(x), x.transpose(0, 2, 1))
    check_view(lay, (2, 5, 6))


def test_flattened_channels_last_needs_the_gather():
    lay = channels_last_flat(2, 3, 4)
    assert not lay.major and lay.block == 6 and lay.channels == 4
    x = np.arange(2 * 24, dtype=np.float32).reshape(2, 24)
    v = lay.to_ncp(x)
    for c in range(4):
        np.testing.assert_array_equal(v[:, c], x[:, c::4])  # value (c, p) = x[:, p * C + c]
    check_view(lay, (2, 24))
    em = _Emitter()
    lay.onnx_to_ncp("x", 2, "t", em, em.inits)
    assert "Gather" in [n.op_type for n in em.nodes]
    em = _Emitter()
    Layout.simple(labels(4), block=6).onnx_to_ncp("x", 2, "t", em, em.inits)
    assert [n.op_type for n in em.nodes] == ["Reshape"]  # channel-major: no gather


def test_flattened_block_with_trailing_positions():
    """A block on axis 1 plus a further axis of positions (e.g. [N, C*H, W])."""
    f = np.arange(12)
    lay = Layout(1, f % 3, f // 3, labels(3))  # channels interleaved on axis 1
    check_view(lay, (2, 12, 5))
    check_view(Layout(2, f % 3, f // 3, labels(3)), (2, 5, 12, 2))


@st.composite
def layouts_and_shapes(draw):
    r = draw(st.integers(2, 5))
    shape = [draw(st.integers(1, 3))] + [draw(st.integers(1, 4)) for _ in range(r - 1)]
    axis = draw(st.integers(1, r - 1))
    c = draw(st.integers(1, 6))
    block = draw(st.integers(1, 3))
    shape[axis] = c * block
    perm = np.asarray(draw(st.permutations(list(range(c * block)))))
    chan, pos = np.empty(c * block, np.int64), np.empty(c * block, np.int64)
    chan[perm], pos[perm] = np.arange(c * block) // block, np.arange(c * block) % block
    return Layout(axis, chan, pos, labels(c)), tuple(shape), draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(case=layouts_and_shapes())
def test_random_layouts_round_trip_and_match_onnx(case):
    lay, shape, seed = case
    check_view(lay, shape, seed)


# --- reshape_layout -------------------------------------------------------------------------


def same_channels(a: np.ndarray, b: np.ndarray) -> None:
    """Two [N, C, P] views hold the same values per channel (P may be ordered differently:
    block positions come first, then the remaining axes)."""
    np.testing.assert_array_equal(np.sort(a, axis=2), np.sort(b, axis=2))


def test_flatten_of_nchw_makes_channel_major_blocks():
    lay = Layout.simple(labels(3))
    new = reshape_layout(lay, ["N", 3, 2, 4], ["N", 24])
    assert isinstance(new, Layout)
    assert new.axis == 1 and new.channels == 3 and new.block == 8 and new.major
    np.testing.assert_array_equal(new.chan, np.repeat(np.arange(3), 8))
    np.testing.assert_array_equal(new.pos, np.tile(np.arange(8), 3))
    assert list(new.labels) == labels(3)
    # the [N, C, P] view of the flat tensor holds the same values as the map's
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 4)).astype(np.float32)
    np.testing.assert_array_equal(new.to_ncp(x.reshape(2, 24)), lay.to_ncp(x))


def test_channels_last_permute_and_flatten_interleaves_channels():
    """NHWC [N, H, W, C] -> permute(0, 2, 1, 3) -> [N, W, H, C] -> reshape(N, -1)."""
    h, w, c = 2, 3, 4
    nhwc = Layout.simple(labels(c), axis=3)
    new = reshape_layout(nhwc, ["N", w, h, c], ["N", w * h * c])  # Transpose keeps axis 3
    assert isinstance(new, Layout)
    assert new.axis == 1 and new.channels == c and new.block == h * w and not new.major
    f = np.arange(h * w * c)
    np.testing.assert_array_equal(new.chan, f % c)
    np.testing.assert_array_equal(new.pos, f // c)
    x = np.random.default_rng(0).standard_normal((2, w, h, c)).astype(np.float32)
    np.testing.assert_array_equal(new.to_ncp(x.reshape(2, -1)), nhwc.to_ncp(x))


def test_head_split_of_btd_is_refused_per_feature_and_derived_per_head():
    """[B, T, H*D] -> [B, T, H, D]: one channel per feature would vary along two axes (refused:
    layouts have one channel axis); a layout with one channel per head (a block of D features)
    becomes H channels on axis 2 with the D axis as positions. T may be dynamic."""
    h, d = 2, 3
    per_feature = Layout.simple(labels(h * d), axis=2)
    why = reshape_layout(per_feature, ["B", "T", h * d], ["B", "T", h, d])
    assert isinstance(why, str) and "mixes channels" in why
    per_head = Layout.simple(labels(h), axis=2, block=d)
    new = reshape_layout(per_head, ["B", "T", h * d], ["B", "T", h, d])
    assert isinstance(new, Layout)
    assert new.axis == 2 and new.channels == h and new.block == 1
    x = np.random.default_rng(0).standard_normal((2, 5, h * d)).astype(np.float32)
    same_channels(new.to_ncp(x.reshape(2, 5, h, d)), per_head.to_ncp(x))


def test_head_merge_of_bthd_interleaves_channels():
    """[B, T, H, D] with D channels on axis 3 -> [B, T, H*D]: chan = f % D, block H."""
    h, d = 2, 3
    lay = Layout.simple(labels(d), axis=3)
    new = reshape_layout(lay, ["B", "T", h, d], ["B", "T", h * d])
    assert isinstance(new, Layout)
    assert new.axis == 2 and new.block == h and not new.major
    np.testing.assert_array_equal(new.chan, np.arange(h * d) % d)
    x = np.random.default_rng(0).standard_normal((2, 5, h, d)).astype(np.float32)
    same_channels(new.to_ncp(x.reshape(2, 5, h * d)), lay.to_ncp(x))


def test_reshape_moving_channels_into_a_block_keeps_positions():
    """[N, C, H, W] -> [N, C*H, W]: C blocks of H on axis 1, W stays a position axis."""
    lay = Layout.simple(labels(3))
    new = reshape_layout(lay, ["N", 3, 2, 4], ["N", 6, 4])
    assert isinstance(new, Layout) and new.axis == 1 and new.block == 2 and new.major
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 4)).astype(np.float32)
    np.testing.assert_array_equal(new.to_ncp(x.reshape(2, 6, 4)), lay.to_ncp(x))


@pytest.mark.parametrize(
    "lay, ins, outs, why",
    [
        (Layout.simple(labels(6)), ["N", 6, 4], ["N", 4, 6], "mixes channels"),
        (Layout.simple(labels(4)), ["N", 4], ["N", 2, 2], "mixes channels"),
        (Layout.simple(labels(4)), ["N", 4, 3], ["N", 3, 4], "mixes channels"),
        (Layout.simple(labels(4)), ["N", 4, 3], ["N", 2, 6], "mixes channels"),
        (Layout.simple(labels(4)), ["N", 4, 3], ["N", 5, 2], "element counts differ"),
        (Layout.simple(labels(4)), ["N", 4, "H"], ["N", -1], "dynamic"),
        (Layout.simple(labels(4)), ["N", 4, 3], [12], "rank < 2"),
    ],
)
def test_reshape_refusals(lay, ins, outs, why):
    got = reshape_layout(lay, ins, outs)
    assert isinstance(got, str) and why in got, got


def _factor(n: int, k: int, draw) -> list[int]:
    """`n` as a product of `k` factors drawn at random."""
    out = []
    for _ in range(k - 1):
        f = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
        out.append(f)
        n //= f
    return out + [n]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), case=layouts_and_shapes())
def test_random_reshapes_follow_every_channel(data, case):
    """Whenever reshape_layout derives a layout, the [N, C, P] view of the reshaped tensor
    holds each channel's values; flattening everything after the batch always succeeds."""
    lay, shape, seed = case
    total = int(np.prod(shape[1:]))
    outs = [shape[0], *_factor(total, data.draw(st.integers(1, 3)), data.draw)]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    for target in (outs, [shape[0], total]):
        new = reshape_layout(lay, list(shape), target)
        if target == [shape[0], total]:
            assert isinstance(new, Layout), new
        if isinstance(new, Layout):
            assert new.channels == lay.channels and list(new.labels) == list(lay.labels)
            assert new.features == target[new.axis]
            same_channels(new.to_ncp(x.reshape(target)), lay.to_ncp(x))
        else:
            assert "mixes channels" in new or "unequal blocks" in new, new


def test_reshape_of_nothing_but_positions_keeps_the_layout():
    """[N, T, D] -> [N, T, D] with dynamic T (a view reshape): unchanged, channels on axis 2."""
    lay = Layout.simple(labels(4), axis=2)
    new = reshape_layout(lay, ["N", "T", 4], ["N", "T", 4])
    assert isinstance(new, Layout) and new.same_geometry(lay)


# --- kept, weight rows ----------------------------------------------------------------------


def test_kept_slices_features_and_renumbers_channels():
    lay = channels_last_flat(2, 3, 4)
    mask = np.array([True, False, True, False])
    kept = lay.kept(mask)
    assert kept.channels == 2 and kept.block == lay.block and list(kept.labels) == ["u0", "u2"]
    feats = lay.feature_mask(mask)
    assert feats.sum() == 12
    x = np.random.default_rng(0).standard_normal((2, 24)).astype(np.float32)
    np.testing.assert_array_equal(kept.to_ncp(x[:, feats]), lay.to_ncp(x)[:, mask])
    assert kept.kept(np.array([False, True])).labels == ["u2"]


def test_weight_rows_and_feature_rows_are_inverse():
    lay = channels_last_flat(2, 3, 4)
    w = np.random.default_rng(0).standard_normal((24, 5))
    w3 = lay.weight_rows(w)
    assert w3.shape == (4, 6, 5)
    for f in range(24):
        np.testing.assert_array_equal(w3[lay.chan[f], lay.pos[f]], w[f])
    np.testing.assert_array_equal(lay.feature_rows(w3), w)
    other = np.random.default_rng(1).standard_normal((4, 6, 5))
    np.testing.assert_array_equal(lay.weight_rows(lay.feature_rows(other)), other)
    # x @ w is the sum over channels and block positions of the [N, C, P] view times w3
    x = np.random.default_rng(2).standard_normal((3, 24))
    np.testing.assert_allclose(np.einsum("ncj,cjo->no", lay.to_ncp(x), w3), x @ w)
