"""Small ONNX graphs shaped like other people's exports (issue 11's acceptance models).

Each builder returns an `onnx.ModelProto` made with `onnx.helper`, imitating one exporter's
habits: channels-last layouts and Transpose pairs (tf2onnx/Keras), weights as `Constant` nodes
(Paddle2ONNX), shapes computed at run time, custom-domain ops, control flow reading outer
tensors, batch sizes baked into Reshape targets, and a transformer feed-forward block. Weights
are seeded random float32 values scaled by fan-in so activations stay O(1) for N(0, 1) inputs.
Opset 17, IR version 8 (onnxruntime reads it). Node names are fixed, so the tests can find the
units a node produces by its name.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

OPSET = 17
IR_VERSION = 8
F = TensorProto.FLOAT

__all__ = [
    "BUILDERS", "channels_last_head", "nhwc_conv_stack", "constant_weights", "unknown_shapes",
    "custom_domain_op", "with_if", "with_loop", "fixed_batch_reshape",
    "fixed_batch_shape_chain", "transformer_ffn", "attention_block", "fused_attention", "sample",
]  # fmt: skip


class _Net:
    """Accumulates nodes and parameters; parameters are initializers or `Constant` nodes."""

    def __init__(self, seed: int, as_constants: bool = False) -> None:
        self.rng = np.random.default_rng(seed)
        self.as_constants = as_constants
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def tensor(self, name: str, value: np.ndarray) -> str:
        t = numpy_helper.from_array(np.asarray(value), name)
        if self.as_constants:
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"{name}.c", value=t))
        else:
            self.inits.append(t)
        return name

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int, gain: float = 2.0) -> str:
        """He-style scaling: variance gain / fan_in keeps Relu stacks O(1)."""
        w = self.rng.standard_normal(shape) * np.sqrt(gain / fan_in)
        return self.tensor(name, w.astype(np.float32))

    def bias(self, name: str, n: int, scale: float = 0.1) -> str:
        return self.tensor(name, self.rng.uniform(-scale, scale, size=n).astype(np.float32))

    def ints(self, name: str, values: list[int]) -> str:
        return self.tensor(name, np.array(values, np.int64))

    def scalar(self, name: str, value: float) -> str:
        return self.tensor(name, np.array(value, np.float32))

    def op(self, op: str, inputs: list[str], name: str, out: str | None = None, **attrs) -> str:
        """Adds a node named `name`; its (first) output is `out`, default the node name."""
        out = out or name
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, name: str, cin: int, cout: int, k: int = 3, bias: bool = True) -> str:
        w = self.weight(f"{name}.weight", (cout, cin, k, k), cin * k * k)
        ins = [x, w] + ([self.bias(f"{name}.bias", cout)] if bias else [])
        return self.op("Conv", ins, name, kernel_shape=[k, k], pads=[k // 2] * 4)

    def gemm(self, x: str, name: str, n_in: int, n_out: int, gain: float = 2.0) -> str:
        """torch.nn.Linear as exported: Gemm(x, W[out, in], b, transB=1)."""
        w = self.weight(f"{name}.weight", (n_out, n_in), n_in, gain)
        return self.op("Gemm", [x, w, self.bias(f"{name}.bias", n_out)], name, transB=1)

    def model(
        self,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        name: str,
        producer: str,
        domains: dict[str, int] | None = None,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        opsets = [helper.make_opsetid("", OPSET)]
        opsets += [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
        model = helper.make_model(
            graph, opset_imports=opsets, ir_version=IR_VERSION, producer_name=producer
        )
        return model


def _io(name: str, shape: list, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


# 1. channels-last ------------------------------------------------------------------------------
def channels_last_head(seed: int = 0, flatten: bool = False) -> onnx.ModelProto:
    """tf2onnx / Keras style channels-last CNN whose head permutes before the flatten.

    x[N,8,8,3] (NHWC) -> Transpose(0,3,1,2) -> Conv(3->8, 3x3, pad 1) -> Relu -> Conv(8->6)
    -> Relu -> Transpose(0,2,3,1) (back to NHWC) -> Transpose(0,2,1,3) (torch's
    `permute(0, 2, 1, 3)`) -> Reshape([0, -1]) (or Flatten when `flatten`) -> Gemm(384->16)
    -> Relu -> Gemm(16->10). The 6 channels of `conv2` reach `fc1` as 64 features each, in an
    order the Transposes interleave.
    """
    n = _Net(seed)
    t = n.op("Transpose", ["x"], "to_nchw", perm=[0, 3, 1, 2])
    r1 = n.op("Relu", [n.conv(t, "conv1", 3, 8)], "relu1")
    r2 = n.op("Relu", [n.conv(r1, "conv2", 8, 6)], "relu2")
    t = n.op("Transpose", [r2], "to_nhwc", perm=[0, 2, 3, 1])
    t = n.op("Transpose", [t], "permute", perm=[0, 2, 1, 3])
    if flatten:
        f = n.op("Flatten", [t], "flatten", axis=1)
    else:
        f = n.op("Reshape", [t, n.ints("flat_shape", [0, -1])], "flatten")
    h = n.op("Relu", [n.gemm(f, "fc1", 6 * 8 * 8, 16)], "relu3")
    n.op("Gemm", [h, n.weight("fc2.weight", (10, 16), 16, 1.0), n.bias("fc2.bias", 10)],
         "fc2", out="y", transB=1)  # fmt: skip
    return n.model([_io("x", ["N", 8, 8, 3])], [_io("y", ["N", 10])], "channels_last_head",
                   "tf2onnx")  # fmt: skip


def nhwc_conv_stack(seed: int = 0) -> onnx.ModelProto:
    """tf2onnx without its transpose optimiser: every Conv wrapped in Transpose pairs.

    x[N,8,8,3] NHWC; three blocks `Transpose(0,3,1,2) -> Conv (no bias) -> Transpose(0,2,3,1)
    -> Add(bias[C], broadcast on the last axis) -> Relu` with channels 3->8->8->6; then Keras'
    GlobalAveragePooling2D as ReduceMean(axes=[1, 2], keepdims=0) and a Dense layer as
    MatMul(W[6,10]) + Add(b[10]).
    """
    n = _Net(seed)
    cur = "x"
    for i, (cin, cout) in enumerate([(3, 8), (8, 8), (8, 6)], start=1):
        t = n.op("Transpose", [cur], f"conv{i}_to_nchw", perm=[0, 3, 1, 2])
        c = n.conv(t, f"conv{i}", cin, cout, bias=False)
        t = n.op("Transpose", [c], f"conv{i}_to_nhwc", perm=[0, 2, 3, 1])
        a = n.op("Add", [t, n.bias(f"conv{i}.bias", cout)], f"conv{i}_bias")
        cur = n.op("Relu", [a], f"relu{i}")
    p = n.op("ReduceMean", [cur], "gap", axes=[1, 2], keepdims=0)
    m = n.op("MatMul", [p, n.weight("dense.kernel", (6, 10), 6, 1.0)], "dense")
    n.op("Add", [m, n.bias("dense.bias", 10)], "dense_bias", out="y")
    return n.model([_io("x", ["N", 8, 8, 3])], [_io("y", ["N", 10])], "nhwc_conv_stack",
                   "tf2onnx")  # fmt: skip


# 2. Constant-node weights ---------------------------------------------------------------------
def constant_weights(seed: int = 0) -> onnx.ModelProto:
    """Paddle2ONNX style: no initializers, every weight, bias and BN statistic is the output of
    a `Constant` node; Conv without bias -> BatchNormalization -> Relu (x2: 3->8->12),
    GlobalAveragePool -> Flatten -> Gemm(12->10) with a Paddle [in, out] weight (transB=0).
    1,290 parameters, 138,480 FLOPs per sample."""
    n = _Net(seed, as_constants=True)
    cur = "x"
    for i, (cin, cout) in enumerate([(3, 8), (8, 12)]):
        w = n.weight(f"conv2d_{i}.w_0", (cout, cin, 3, 3), cin * 9)
        c = n.op("Conv", [cur, w], f"p2o.Conv.{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        # scale, shift, running mean, running variance
        stats = [(0.5, 1.5), (-0.1, 0.1), (-0.1, 0.1), (0.5, 1.5)]
        bn = [
            n.tensor(f"batch_norm2d_{i}.w_{j}", n.rng.uniform(lo, hi, cout).astype(np.float32))
            for j, (lo, hi) in enumerate(stats)
        ]
        b = n.op("BatchNormalization", [c, *bn], f"p2o.BatchNormalization.{i}", epsilon=1e-5)
        cur = n.op("Relu", [b], f"p2o.Relu.{i}")
    g = n.op("GlobalAveragePool", [cur], "p2o.GlobalAveragePool.0")
    f = n.op("Flatten", [g], "p2o.Flatten.0", axis=1)
    w = n.weight("linear_0.w_0", (12, 10), 12, 1.0)
    n.op("Gemm", [f, w, n.bias("linear_0.b_0", 10)], "p2o.Gemm.0", out="y")
    return n.model([_io("x", ["N", 3, 8, 8])], [_io("y", ["N", 10])], "constant_weights",
                   "PaddlePaddle")  # fmt: skip


# 3. shapes static inference cannot follow -----------------------------------------------------
def unknown_shapes(seed: int = 0) -> onnx.ModelProto:
    """A torch export with `x.view(x.size())`-like Reshapes whose targets are computed at run
    time in ways onnx's data propagation cannot follow (Shape -> Cast to float -> Mul -> Cast to
    int64): the input of `conv2` and the input of the MatMul `fc1` have unknown dims after
    shape inference (rank known). onnxruntime runs it: the reshapes are identities.

    x[N,3,8,8] -> Conv(3->8) -> Relu -> Reshape(runtime shape) -> Conv(8->6) -> Relu ->
    GlobalAveragePool -> Reshape(Concat(Cast(Cast(Shape[0]) * 1), [-1])) -> MatMul(6->16) + b
    -> Relu -> MatMul(16->10) + b. 83,456 FLOPs per sample.
    """
    n = _Net(seed)
    r1 = n.op("Relu", [n.conv("x", "conv1", 3, 8)], "relu1")
    s = n.op("Shape", [r1], "shape1")
    s = n.op("Cast", [s], "shape1_float", to=F)
    s = n.op("Mul", [s, n.tensor("ones4", np.ones(4, np.float32))], "shape1_scaled")
    s = n.op("Cast", [s], "shape1_int", to=TensorProto.INT64)
    v = n.op("Reshape", [r1, s], "view1")
    r2 = n.op("Relu", [n.conv(v, "conv2", 8, 6)], "relu2")
    g = n.op("GlobalAveragePool", [r2], "gap")
    b = n.op("Gather", [n.op("Shape", [g], "shape2"), n.ints("zero", [0])], "batch", axis=0)
    b = n.op("Cast", [b], "batch_float", to=F)
    b = n.op("Mul", [b, n.scalar("one", 1.0)], "batch_scaled")
    b = n.op("Cast", [b], "batch_int", to=TensorProto.INT64)
    s = n.op("Concat", [b, n.ints("minus_one", [-1])], "shape2_target", axis=0)
    f = n.op("Reshape", [g, s], "flatten")
    h = n.op("MatMul", [f, n.weight("fc1.weight", (6, 16), 6)], "fc1")
    h = n.op("Relu", [n.op("Add", [h, n.bias("fc1.bias", 16)], "fc1_bias")], "relu3")
    h = n.op("MatMul", [h, n.weight("fc2.weight", (16, 10), 16, 1.0)], "fc2")
    n.op("Add", [h, n.bias("fc2.bias", 10)], "fc2_bias", out="y")
    return n.model([_io("x", ["N", 3, 8, 8])], [_io("y", ["N", 10])], "unknown_shapes",
                   "pytorch")  # fmt: skip


# 4. custom domain -----------------------------------------------------------------------------
def custom_domain_op(seed: int = 0) -> onnx.ModelProto:
    """A torch export with a custom symbolic: `com.example::MyOp` (no schema, no shape
    information, no kernel: onnxruntime cannot run it) between two convs.

    x[N,3,8,8] -> Conv(3->8) -> Relu -> MyOp -> Conv(8->6) -> Relu -> GlobalAveragePool ->
    Flatten -> Gemm(6->10), plus a side branch relu1 -> GlobalAveragePool -> Flatten ->
    Gemm(8->10) added to the output, so conv1's channels are read both by MyOp and by a linear
    layer.
    """
    n = _Net(seed)
    r1 = n.op("Relu", [n.conv("x", "conv1", 3, 8)], "relu1")
    n.nodes.append(helper.make_node("MyOp", [r1], ["myop"], name="myop", domain="com.example",
                                    alpha=0.5))  # fmt: skip
    r2 = n.op("Relu", [n.conv("myop", "conv2", 8, 6)], "relu2")
    f = n.op("Flatten", [n.op("GlobalAveragePool", [r2], "gap")], "flatten", axis=1)
    main = n.gemm(f, "fc", 6, 10, 1.0)
    s = n.op("Flatten", [n.op("GlobalAveragePool", [r1], "side_gap")], "side_flatten", axis=1)
    n.op("Add", [main, n.gemm(s, "side", 8, 10, 1.0)], "sum", out="y")
    return n.model([_io("x", ["N", 3, 8, 8])], [_io("y", ["N", 10])], "custom_domain_op",
                   "pytorch", domains={"com.example": 1})  # fmt: skip


# 5. control flow ------------------------------------------------------------------------------
def _two_convs(n: _Net) -> tuple[str, str]:
    """x[N,3,8,8] -> conv1(3->8) -> relu1 -> conv2(8->6) -> relu2 -> GAP -> Flatten -> fc(6->10).
    Returns (relu1, fc output)."""
    r1 = n.op("Relu", [n.conv("x", "conv1", 3, 8)], "relu1")
    r2 = n.op("Relu", [n.conv(r1, "conv2", 8, 6)], "relu2")
    f = n.op("Flatten", [n.op("GlobalAveragePool", [r2], "gap")], "flatten", axis=1)
    return r1, n.gemm(f, "fc", 6, 10, 1.0)


def with_if(seed: int = 0) -> onnx.ModelProto:
    """A scripted torch model (torch.jit.script export) with data-dependent control flow: an
    `If` on the graph input `use_max` (bool scalar) whose branches read `relu1` (the output of
    conv1, also read by conv2) from the outer scope: then = ReduceMax over H, W; else =
    ReduceMean over H, W, both [N,8]. The If output feeds `side`, a Gemm(8->10) added to the
    main path's Gemm. Both branches run in onnxruntime."""
    n = _Net(seed)
    r1, main = _two_convs(n)
    branches = []
    for op in ("ReduceMax", "ReduceMean"):
        body = helper.make_node(op, ["relu1"], [f"{op}_out"], name=f"{op}_branch", axes=[2, 3],
                                keepdims=0)  # fmt: skip
        branches.append(helper.make_graph([body], f"{op}_branch", [],
                                          [_io(f"{op}_out", ["N", 8])]))  # fmt: skip
    n.nodes.append(helper.make_node("If", ["use_max"], ["pooled"], name="if",
                                    then_branch=branches[0], else_branch=branches[1]))  # fmt: skip
    side = n.gemm("pooled", "side", 8, 10, 1.0)
    n.op("Add", [main, side], "sum", out="y")
    inputs = [_io("x", ["N", 3, 8, 8]), _io("use_max", [], TensorProto.BOOL)]
    return n.model(inputs, [_io("y", ["N", 10])], "with_if", "pytorch")


def with_loop(seed: int = 0) -> onnx.ModelProto:
    """A scripted torch `for i in range(2)` loop exported as `Loop` (trip count 2, a Constant):
    its body reads `relu1` (conv1's output, also read by conv2) from the outer scope and emits
    `(i + 1) * mean_hw(relu1)` as a scan output [2,N,8]; ReduceSum over the iterations gives
    [N,8] -> Gemm(8->10) added to the main path's Gemm."""
    n = _Net(seed)
    r1, main = _two_convs(n)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
            helper.make_node(
                "ReduceMean", ["relu1"], ["hw_mean"], name="loop_mean", axes=[2, 3], keepdims=0
            ),  # fmt: skip
            helper.make_node("Cast", ["i"], ["i_float"], name="loop_cast", to=F),
            helper.make_node("Add", ["i_float", "loop_one"], ["scale"], name="loop_add"),
            helper.make_node("Mul", ["hw_mean", "scale"], ["scan_out"], name="loop_mul"),
        ],
        "loop_body",
        [_io("i", [], TensorProto.INT64), _io("cond_in", [], TensorProto.BOOL)],
        [_io("cond_out", [], TensorProto.BOOL), _io("scan_out", ["N", 8])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "loop_one")],
    )
    trips = n.op("Constant", [], "trips", value=numpy_helper.from_array(np.array(2, np.int64)))
    cond = n.op("Constant", [], "cond", value=numpy_helper.from_array(np.array(True)))
    n.nodes.append(helper.make_node("Loop", [trips, cond], ["stacked"], name="loop", body=body))
    s = n.op("ReduceSum", ["stacked", n.ints("iter_axis", [0])], "iter_sum", keepdims=0)
    side = n.gemm(s, "side", 8, 10, 1.0)
    n.op("Add", [main, side], "sum", out="y")
    return n.model([_io("x", ["N", 3, 8, 8])], [_io("y", ["N", 10])], "with_loop", "pytorch")


# 6. batch baked in ----------------------------------------------------------------------------
def _fixed_batch(n: _Net, target: str, name: str) -> onnx.ModelProto:
    """x[1,3,8,8] -> conv(3->8) -> relu -> Reshape(relu, target) [1,512] -> Gemm(512->16) ->
    Relu -> Gemm(16->10)."""
    f = n.op("Reshape", ["relu", target], "flatten")
    h = n.op("Relu", [n.gemm(f, "fc1", 512, 16)], "relu_fc")
    n.op("Gemm", [h, n.weight("fc2.weight", (10, 16), 16, 1.0), n.bias("fc2.bias", 10)],
         "fc2", out="y", transB=1)  # fmt: skip
    return n.model([_io("x", [1, 3, 8, 8])], [_io("y", [1, 10])], name, "pytorch")


def fixed_batch_reshape(seed: int = 0) -> onnx.ModelProto:
    """torch.onnx.export with a batch-1 example input and no dynamic axes, after onnxsim: the
    input is [1,3,8,8] and the flatten is a Reshape to the constant [1, -1] (batch baked in).
    conv(3->8) -> Relu -> Reshape([1, -1]) -> Gemm(512->16) -> Relu -> Gemm(16->10)."""
    n = _Net(seed)
    n.op("Relu", [n.conv("x", "conv", 3, 8)], "relu")
    return _fixed_batch(n, n.ints("flat_shape", [1, -1]), "fixed_batch_reshape")


def fixed_batch_shape_chain(seed: int = 0) -> onnx.ModelProto:
    """torch.onnx.export of `x.view(x.size(0), -1)` with a batch-1 input, not simplified: the
    target is Shape -> Gather(0) -> Unsqueeze -> Concat with [-1], and the intermediate shapes are
    recorded as value_info (batch 1), so constant folding turns the target into [1, -1]. Same
    layers as fixed_batch_reshape."""
    n = _Net(seed)
    r = n.op("Relu", [n.conv("x", "conv", 3, 8)], "relu")
    b = n.op("Gather", [n.op("Shape", [r], "shape"), n.tensor("zero", np.array(0, np.int64))],
             "batch", axis=0)  # fmt: skip
    b = n.op("Unsqueeze", [b, n.ints("axes0", [0])], "batch_1d")
    t = n.op("Concat", [b, n.ints("minus_one", [-1])], "flat_shape", axis=0)
    # torch writes the value_info of intermediate tensors: with them the chain folds to [1, -1]
    return shape_inference.infer_shapes(_fixed_batch(n, t, "fixed_batch_shape_chain"))


# 7. transformer -------------------------------------------------------------------------------
def transformer_ffn(seed: int = 0, tokens: bool = False) -> onnx.ModelProto:
    """A Hugging Face style encoder block's feed-forward half, as torch exports it (opset 17).

    x[B,5,16] -> MatMul(W1[16,32]) + b1 -> GELU as Div(sqrt 2) -> Erf -> Add(1) -> Mul(h) ->
    Mul(0.5) -> MatMul(W2[32,16]) + b2 -> Add(x) (residual) -> LayerNormalization(axis -1) ->
    ReduceMean over T -> Gemm(16->4). The 32 FFN neurons live on the last axis of [B,T,32];
    the 16 residual channels are normalised together by the LayerNormalization.
    tokens: a token classifier instead: MatMul(16->4) + bias per position, y [B,5,4].
    """
    n = _Net(seed)
    h = n.op("MatMul", ["x", n.weight("ffn.in.weight", (16, 32), 16, 1.0)], "ffn_in")
    h = n.op("Add", [h, n.bias("ffn.in.bias", 32)], "ffn_in_bias")
    g = n.op("Div", [h, n.scalar("sqrt2", np.sqrt(2.0))], "gelu_div")
    g = n.op("Erf", [g], "gelu_erf")
    g = n.op("Add", [g, n.scalar("one", 1.0)], "gelu_add")
    g = n.op("Mul", [h, g], "gelu_mul")
    g = n.op("Mul", [g, n.scalar("half", 0.5)], "gelu")
    o = n.op("MatMul", [g, n.weight("ffn.out.weight", (32, 16), 32, 1.0)], "ffn_out")
    o = n.op("Add", [o, n.bias("ffn.out.bias", 16)], "ffn_out_bias")
    r = n.op("Add", [o, "x"], "residual")
    scale = n.tensor("ln.weight", n.rng.uniform(0.5, 1.5, 16).astype(np.float32))
    ln = n.op("LayerNormalization", [r, scale, n.bias("ln.bias", 16)], "ln", axis=-1,
              epsilon=1e-5)  # fmt: skip
    if tokens:
        t = n.op("MatMul", [ln, n.weight("head.weight", (16, 4), 16, 1.0)], "head")
        n.op("Add", [t, n.bias("head.bias", 4)], "head_bias", out="y")
        return n.model([_io("x", ["B", 5, 16])], [_io("y", ["B", 5, 4])], "token_classifier",
                       "pytorch")  # fmt: skip
    p = n.op("ReduceMean", [ln], "pool", axes=[1], keepdims=0)
    n.op("Gemm", [p, n.weight("head.weight", (4, 16), 16, 1.0), n.bias("head.bias", 4)],
         "head", out="y", transB=1)  # fmt: skip
    return n.model([_io("x", ["B", 5, 16])], [_io("y", ["B", 4])], "transformer_ffn",
                   "pytorch")  # fmt: skip


def attention_block(seed: int = 0, runtime_targets: bool = False, seq: int | str = 5,
                    heads: int = 4, layers: int = 1, shared_target: bool = False,
                    hf_style: bool = False,
                    dynamo_kt: bool = False) -> onnx.ModelProto:  # fmt: skip
    """A BERT-style encoder layer as the TorchScript exporter writes it (opset 17).

    x[B,T,16] -> MatMul + Add (embedding projection) -> LayerNormalization -> q, k, v =
    MatMul + Add -> head split Reshape [0, 0, H, Dh] (a constant, or with `runtime_targets`
    Shape -> Gather -> Unsqueeze -> Concat with constant H, Dh) -> Transpose [0,2,1,3] (K:
    [0,2,3,1]) -> MatMul(q, k^T) -> Div(sqrt Dh) -> Add(mask[B,1,1,T]) -> Softmax -> MatMul(v)
    -> Transpose [0,2,1,3] -> Reshape [0, 0, 16] -> MatMul(Wo) + bo -> residual Add -> FFN
    (erf GELU) -> residual Add -> LayerNormalization -> ReduceMean over T -> Gemm (4 classes).
    `layers` stacks the layer; `shared_target` makes every head split of every layer read one
    run-time target (exports share such Concats), so non-uniform head counts need copies.
    `hf_style`: as Hugging Face's SDPA attention exports (TorchScript): head split targets
    [B, T, -1, Dh] built at run time (ONNX shape inference leaves the head axis unknown),
    Where(IsNaN(probs), 0, probs) after the Softmax, and a no-op Reshape(B, -1, T, Dh) of the
    context before its Transpose.
    `dynamo_kt`: K^T as the dynamo exporter's SDPA lowering writes it: K Transpose [0,2,1,3],
    Reshape([-1, T, Dh]) (batch and heads merged), Transpose [0,2,1], Reshape([B, H, Dh, T])
    built at run time.
    """
    d, h = 16, heads
    dh = d // h
    n = _Net(seed)
    e = n.op("MatMul", ["x", n.weight("emb.weight", (d, d), d, 1.0)], "emb")
    e = n.op("Add", [n.bias("emb.bias", d), e], "emb_bias")  # bias as the first operand

    def ln(x: str, name: str) -> str:
        scale = n.tensor(f"{name}.weight", n.rng.uniform(0.5, 1.5, d).astype(np.float32))
        return n.op("LayerNormalization", [x, scale, n.bias(f"{name}.bias", d)], name,
                    axis=-1, epsilon=1e-5)  # fmt: skip

    shared: dict[str, str] = {}

    def target(name: str, tail: list[int], src: str) -> str:
        if hf_style and tail == [h, dh]:
            return target_of(name, [-1, dh], src)
        if not runtime_targets:
            return n.ints(f"{name}.shape", [0, 0, *tail])
        if shared_target and tail != [d]:
            if "split" not in shared:
                shared["split"] = target_of(name, tail, src)
            return shared["split"]
        return target_of(name, tail, src)

    def target_of(name: str, tail: list[int], src: str) -> str:
        shp = n.op("Shape", [src], f"{name}.shape_of")
        parts = []
        for i in (0, 1):
            g = n.op("Gather", [shp, n.ints(f"{name}.i{i}", [i])], f"{name}.dim{i}", axis=0)
            parts.append(g)
        parts.append(n.ints(f"{name}.tail", tail))
        return n.op("Concat", parts, f"{name}.target", axis=0)

    r = e
    for layer in range(layers):
        pre = f"l{layer}." if layers > 1 else ""
        e = r
        a = ln(e, f"{pre}ln1")
        heads_ = {}
        for w in ("q", "k", "v"):
            y = n.op("MatMul", [a, n.weight(f"{pre}{w}.weight", (d, d), d, 1.0)], f"{pre}{w}_proj")
            y = n.op("Add", [y, n.bias(f"{pre}{w}.bias", d)], f"{pre}{w}_bias")
            y = n.op("Reshape", [y, target(f"{pre}{w}_split", [h, dh], y)], f"{pre}{w}_heads")
            perm = [0, 2, 3, 1] if w == "k" and not dynamo_kt else [0, 2, 1, 3]
            heads_[w] = n.op("Transpose", [y], f"{pre}{w}_t", perm=perm)
        if dynamo_kt:
            k = heads_["k"]
            shp = n.op("Shape", [k], f"{pre}kt.shape_of")
            dims = [n.op("Gather", [shp, n.ints(f"{pre}kt.i{i}", [i])], f"{pre}kt.d{i}", axis=0)
                    for i in range(4)]  # fmt: skip
            merge = n.op("Concat", [n.ints(f"{pre}kt.m1", [-1]), dims[2], dims[3]],
                         f"{pre}kt.merge", axis=0)  # fmt: skip
            k = n.op("Reshape", [k, merge], f"{pre}kt.merged")
            k = n.op("Transpose", [k], f"{pre}kt.t", perm=[0, 2, 1])
            split = n.op("Concat", [dims[0], dims[1], dims[3], dims[2]], f"{pre}kt.split", axis=0)
            heads_["k"] = n.op("Reshape", [k, split], f"{pre}kt.split_heads")
        s = n.op("MatMul", [heads_["q"], heads_["k"]], f"{pre}scores")
        s = n.op("Div", [s, n.scalar(f"{pre}scale", np.sqrt(dh))], f"{pre}scaled")
        s = n.op("Add", [s, "mask"], f"{pre}masked")
        s = n.op("Softmax", [s], f"{pre}probs", axis=-1)
        if hf_style:
            nan = n.op("IsNaN", [s], f"{pre}probs_nan")
            s = n.op("Where", [nan, n.scalar(f"{pre}zero", 0.0), s], f"{pre}probs_clean")
        c = n.op("MatMul", [s, heads_["v"]], f"{pre}context")
        if hf_style:  # Reshape(B, -1, T, Dh) of [B, H, T, Dh]: the same shape
            shp = n.op("Shape", [c], f"{pre}context.shape_of")
            b0 = n.op("Gather", [shp, n.ints(f"{pre}context.i0", [0])], f"{pre}context.b", axis=0)
            t2 = n.op("Gather", [shp, n.ints(f"{pre}context.i2", [2])], f"{pre}context.t", axis=0)
            tgt = n.op("Concat", [b0, n.ints(f"{pre}context.m1", [-1]), t2,
                                  n.ints(f"{pre}context.dh", [dh])], f"{pre}context.target",
                       axis=0)  # fmt: skip
            c = n.op("Reshape", [c, tgt], f"{pre}context_same")
        c = n.op("Transpose", [c], f"{pre}context_t", perm=[0, 2, 1, 3])
        c = n.op("Reshape", [c, target(f"{pre}merge", [d], c)], f"{pre}merged")
        o = n.op("MatMul", [c, n.weight(f"{pre}out.weight", (d, d), d, 1.0)], f"{pre}out_proj")
        o = n.op("Add", [o, n.bias(f"{pre}out.bias", d)], f"{pre}out_bias")
        r = n.op("Add", [e, o], f"{pre}residual1")
        f = n.op(
            "MatMul",
            [ln(r, f"{pre}ln2"), n.weight(f"{pre}ffn.in.weight", (d, 32), d, 1.0)],
            f"{pre}ffn_in",
        )
        f = n.op("Add", [f, n.bias(f"{pre}ffn.in.bias", 32)], f"{pre}ffn_in_bias")
        g = n.op("Div", [f, n.scalar(f"{pre}sqrt2", np.sqrt(2.0))], f"{pre}gelu_div")
        g = n.op("Erf", [g], f"{pre}gelu_erf")
        g = n.op("Add", [g, n.scalar(f"{pre}one", 1.0)], f"{pre}gelu_add")
        g = n.op("Mul", [f, g], f"{pre}gelu_mul")
        g = n.op("Mul", [g, n.scalar(f"{pre}half", 0.5)], f"{pre}gelu")
        f = n.op("MatMul", [g, n.weight(f"{pre}ffn.out.weight", (32, d), 32, 1.0)], f"{pre}ffn_out")
        f = n.op("Add", [f, n.bias(f"{pre}ffn.out.bias", d)], f"{pre}ffn_out_bias")
        r = n.op("Add", [r, f], f"{pre}residual2")
    p = n.op("ReduceMean", [ln(r, "ln3")], "pool", axes=[1], keepdims=0)
    n.op("Gemm", [p, n.weight("head.weight", (4, d), d, 1.0), n.bias("head.bias", 4)],
         "head", out="y", transB=1)  # fmt: skip
    inputs = [_io("x", ["B", seq, d]), _io("mask", ["B", 1, 1, seq])]
    return n.model(inputs, [_io("y", ["B", 4])], "attention_block", "pytorch")


def fused_attention(seed: int = 0, qkv: str = "split", conv1d: bool = False,
                    seq: int | str = 5) -> onnx.ModelProto:  # fmt: skip
    """An encoder layer whose q, k, v come from one projection, as timm, Paddle and GPT-2 export.

    x[B,T,16] -> LayerNormalization -> qkv = one linear to 48 features, then by `qkv`:
    "split": Reshape [B, T, 3, H, Dh] -> Transpose [2,0,3,1,4] -> Split(axis 0) -> Squeeze(0)
    (timm through TorchScript); "gather": the same with a Gather(axis 0, index s) per part;
    "slice": Reshape [-1, T, 3, H, Dh] (Paddle) and Slice(axis 0, [s, s+1]) -> Squeeze(0) per
    part (dynamo's unbind); "last_axis": Split(axis -1) into three [B, T, 16] and a head split
    Reshape [0, 0, H, Dh] -> Transpose [0,2,1,3] each (GPT-2). Then MatMul(q, k^T) -> Mul(scale)
    -> Softmax -> MatMul(v) -> Transpose -> Reshape(B, T, C) with C read from the Shape of the
    block input (timm's `B, N, C = x.shape`) -> out projection -> residual -> FFN (Relu) ->
    residual -> ReduceMean over T -> Gemm (3 classes). `conv1d`: every linear as GPT-2's Conv1D
    exports, Reshape([-1, D]) -> Gemm(x, W[D, O], b) -> Reshape([B, T, O]) at run time (the
    out projection's Reshape merges [B, T, H, Dh] directly).
    """
    d, h, dh = 16, 4, 4
    n = _Net(seed)
    x = "x"
    shp = n.op("Shape", [x], "x.shape_of")
    dim = {i: n.op("Gather", [shp, n.ints(f"x.i{i}", [i])], f"x.dim{i}", axis=0) for i in range(3)}

    def linear(a: str, name: str, n_in: int, n_out: int) -> str:
        w = n.weight(f"{name}.weight", (n_in, n_out), n_in, 1.0)
        if not conv1d:
            y = n.op("MatMul", [a, w], name)
            return n.op("Add", [n.bias(f"{name}.bias", n_out), y], f"{name}_bias")
        flat = n.op("Reshape", [a, n.ints(f"{name}.flat", [-1, n_in])], f"{name}_flat")
        y = n.op("Gemm", [flat, w, n.bias(f"{name}.bias", n_out)], name)
        back = n.op("Concat", [dim[0], dim[1], n.ints(f"{name}.o", [n_out])], f"{name}.back",
                    axis=0)  # fmt: skip
        return n.op("Reshape", [y, back], f"{name}_back")

    scale = n.tensor("ln.weight", n.rng.uniform(0.5, 1.5, d).astype(np.float32))
    a = n.op("LayerNormalization", [x, scale, n.bias("ln.bias", d)], "ln", axis=-1)
    t = linear(a, "qkv", d, 3 * d)
    parts: list[str] = []
    if qkv == "last_axis":
        outs = [f"qkv_split{i}" for i in range(3)]
        n.nodes.append(helper.make_node("Split", [t, n.ints("qkv.sizes", [d] * 3)], outs,
                                        name="qkv_split", axis=-1))  # fmt: skip
        for i, o in enumerate(outs):
            r = n.op("Reshape", [o, n.ints(f"head_split{i}", [0, 0, h, dh])], f"heads{i}")
            parts.append(n.op("Transpose", [r], f"heads{i}_t", perm=[0, 2, 1, 3]))
    else:
        lead = [-1] if qkv == "slice" else [0]
        tgt = (n.ints("qkv.split", [*lead, seq, 3, h, dh]) if isinstance(seq, int) else
               n.op("Concat", [n.ints("qkv.b", lead), dim[1], n.ints("qkv.tail", [3, h, dh])],
                    "qkv.split", axis=0))  # fmt: skip
        r = n.op("Reshape", [t, tgt], "qkv_heads")
        p = n.op("Transpose", [r], "qkv_t", perm=[2, 0, 3, 1, 4])
        if qkv == "split":
            outs = [f"qkv_part{i}" for i in range(3)]
            n.nodes.append(helper.make_node("Split", [p, n.ints("qkv.ones", [1] * 3)], outs,
                                            name="qkv_unbind", axis=0))  # fmt: skip
        sq, ax0 = n.ints("qkv.sq", [0]), n.ints("qkv.axis0", [0])
        for i in range(3):
            if qkv == "gather":
                parts.append(n.op("Gather", [p, n.tensor(f"qkv.idx{i}", np.array(i, np.int64))],
                                  f"qkv_get{i}", axis=0))  # fmt: skip
                continue
            if qkv == "slice":
                sl = n.op("Slice", [p, n.ints(f"qkv.s{i}", [i]), n.ints(f"qkv.e{i}", [i + 1]),
                                    ax0], f"qkv_slice{i}")  # fmt: skip
            else:
                sl = f"qkv_part{i}"
            parts.append(n.op("Squeeze", [sl, sq], f"qkv_sq{i}"))
    q, k, v = parts
    kt = n.op("Transpose", [k], "k_t", perm=[0, 1, 3, 2])
    s = n.op("Mul", [n.op("MatMul", [q, kt], "scores"), n.scalar("scale", dh**-0.5)], "scaled")
    c = n.op("MatMul", [n.op("Softmax", [s], "probs", axis=-1), v], "context")
    c = n.op("Transpose", [c], "context_t", perm=[0, 2, 1, 3])
    if conv1d:
        w = n.weight("out.weight", (d, d), d, 1.0)
        flat = n.op("Reshape", [c, n.ints("out.flat", [-1, d])], "out_flat")
        o = n.op("Gemm", [flat, w, n.bias("out.bias", d)], "out_proj")
        back = n.op("Concat", [dim[0], dim[1], n.ints("out.o", [d])], "out.back", axis=0)
        o = n.op("Reshape", [o, back], "out_back")
    else:
        dims = []
        for i in range(3):  # B, N, C = x.shape: scalar Gathers, unsqueezed
            g = n.op("Gather", [shp, n.tensor(f"x.s{i}", np.array(i, np.int64))], f"x.sdim{i}",
                     axis=0)  # fmt: skip
            dims.append(n.op("Unsqueeze", [g, n.ints(f"x.u{i}", [0])], f"x.udim{i}"))
        merge = n.op("Concat", dims, "merge.target", axis=0)
        c = n.op("Reshape", [c, merge], "merged")
        o = linear(c, "out", d, d)
    r = n.op("Add", [x, o], "residual1")
    f = n.op("Relu", [linear(r, "ffn_in", d, 24)], "ffn_act")
    r = n.op("Add", [r, linear(f, "ffn_out", 24, d)], "residual2")
    pool = n.op("ReduceMean", [r], "pool", axes=[1], keepdims=0)
    n.op("Gemm", [pool, n.weight("head.weight", (3, d), d, 1.0), n.bias("head.bias", 3)],
         "head", out="y", transB=1)  # fmt: skip
    return n.model([_io("x", ["B", seq, d])], [_io("y", ["B", 3])], "fused_attention", "timm")


BUILDERS = {
    f.__name__: f
    for f in (
        channels_last_head,
        nhwc_conv_stack,
        constant_weights,
        unknown_shapes,
        custom_domain_op,
        with_if,
        with_loop,
        fixed_batch_reshape,
        fixed_batch_shape_chain,
        transformer_ffn,
        attention_block,
        fused_attention,
    )  # fmt: skip
}


def sample(model: onnx.ModelProto, n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for the model's graph inputs (initializers excluded): N(0, 1) floats with
    axis 0 set to `n` (also where the model fixes the batch: that is calibration data for a
    fixed-batch model, run one sample at a time), random booleans for scalar bool inputs."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if dims:
            dims[0] = n
        if any(d is None for d in dims):
            raise ValueError(f"input {vi.name!r} has a symbolic non-batch dim: {dims}")
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dtype == np.bool_:
            feeds[vi.name] = np.asarray(rng.random(dims) < 0.5)
        else:
            feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
    return feeds
