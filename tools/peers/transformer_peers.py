"""Transformer peers for tools/bench_transformers.py, written from the papers' descriptions.

Units are scmopt's (scmopt.units.analyze): attention heads (`kind == "head"`, cut = the merged
context [B, T, H*Dh] read by the output projection, block Dh) and FFN neurons (`kind ==
"token"`, cut = the activation read by the second FFN linear). Every peer's removal set is
compiled by scmopt's exact compiler (removed units become constants), so all peers' models
have the same graph form as scmopt's and their FLOPs are counted by the same code.

- FLAP (An et al., arXiv 2312.11983): score of a unit = variance of its input feature(s) over
  the calibration tokens x squared L2 norm of the consumer weight row(s) (a head: summed over
  its Dh channels), standardised within each cut (z-score), removed globally lowest-first;
  removed units are replaced by their calibration mean ("baseline bias"): FFN neurons by a
  scmopt constant (the compiler puts it into the second linear's bias), heads by adding
  sum_j mean_j W_out[j] of the removed head's channels to the output projection's bias.
- Kwon et al. (NeurIPS 2022, "A Fast Post-Training Pruning Framework for Transformers"):
  diagonal Fisher of the head / neuron masks, F_u = mean_x (dL/dm_u)^2 with L the
  cross-entropy against the labels, dL/dm_u from a central finite difference of scaling the
  unit's values by (1 +- eps) at its cut (scmopt.runtime.hooks perturb hook); removal
  greedy by F_u / FLOPs_u under the FLOPs budget; removed units masked to 0; then per cut the
  kept units' scales s solve min_s || W (s * x_kept) - W x ||^2 on the original's calibration
  activations (a linear least-squares problem per layer), applied by scaling the kept rows of
  the consumer MatMul weight.
- onnxsim 0.8.1: `apply_attention_head_pruning` (fused attention only) and
  `apply_structured_pruning` (MatMul/Gemm chains), optional ridge refit
  `onnxsim.finetune.apply_pruning_finetune`; see `onnxsim_routes`.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from peers.bisect import first_crossing
from scmopt import units as U
from scmopt.compiler.compile import compile_plan
from scmopt.ops import cost
from scmopt.plan import Plan
from scmopt.runtime.hooks import HookSpec, hook


def _sess(model: onnx.ModelProto, threads: int = 2) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])


def logits(model_or_sess, feeds: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    s = model_or_sess if isinstance(model_or_sess, ort.InferenceSession) else _sess(model_or_sess)
    n = len(next(iter(feeds.values())))
    return np.concatenate([s.run(None, {k: v[i : i + batch] for k, v in feeds.items()})[0]
                           for i in range(0, n, batch)])  # fmt: skip


def ce(lg: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = lg.astype(np.float64)
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    return lse - z[np.arange(len(y)), y]


@dataclass
class TUnits:
    """The transformer units of a model: cuts, units, per-unit FLOPs, consumer weights."""

    ug: U.UnitGraph
    sample: dict[str, np.ndarray]
    cuts: list[str] = field(default_factory=list)  # head and FFN cuts, graph order
    kind: dict[str, str] = field(default_factory=dict)  # cut -> "head" | "ffn"
    layer: dict[str, int] = field(default_factory=dict)  # cut -> layer index
    f0: int = 0
    unit_cost: dict[str, int] = field(default_factory=dict)  # cut -> FLOPs of one unit
    other: list[str] = field(default_factory=list)  # other prunable cuts (e.g. a pooler)

    @classmethod
    def build(cls, ug: U.UnitGraph, sample: dict[str, np.ndarray]) -> TUnits:
        t = cls(ug, sample)
        nh = nf = 0
        for c, cut in ug.cuts.items():
            ks = {ug.units[u].kind for u in cut.units}
            if not all(ug.units[u].prunable for u in cut.units):
                continue
            if ks == {"head"}:
                t.kind[c], t.layer[c] = "head", nh
                nh += 1
            elif ks == {"token"}:
                t.kind[c], t.layer[c] = "ffn", nf
                nf += 1
            else:
                t.other.append(c)
                continue
            t.cuts.append(c)
        t.f0 = cost.count_flops(ug.model, sample)
        for c in t.cuts + t.other:  # marginal FLOPs of one unit of each cut (affine in the counts)
            u = ug.cuts[c].units[0]
            m = compile_plan(ug, Plan().set_constant(u, {c: 0.0})).model
            t.unit_cost[c] = t.f0 - cost.count_flops(m, sample)
        return t

    def unit_ids(self, c: str) -> list[str]:
        return list(dict.fromkeys(self.ug.cuts[c].units))

    def all_units(self) -> list[tuple[str, str]]:
        return [(c, u) for c in self.cuts for u in self.unit_ids(c)]

    def consumer(self, c: str, model: onnx.ModelProto | None = None):
        """(node, weight initializer) of the cut's one MatMul consumer in `model`."""
        model = model or self.ug.model
        (name,) = self.ug.cuts[c].consumers
        node = next(n for n in model.graph.node if n.name == name)
        init = next(i for i in model.graph.initializer if i.name == node.input[1])
        return node, init

    def weight(self, c: str) -> np.ndarray:
        return numpy_helper.to_array(self.consumer(c)[1]).astype(np.float64)  # [F, O]

    def feature_index(self, c: str) -> np.ndarray:
        """For each weight row f: its column in the [N*R, C*block] feature matrix."""
        lay = self.ug.cuts[c].layout
        return np.asarray(lay.chan) * lay.block + np.asarray(lay.pos)

    def flops_after(self, removed: dict[str, int]) -> int:
        return self.f0 - sum(self.unit_cost[c] * k for c, k in removed.items())


# activations ------------------------------------------------------------------------------
def token_weights(feeds: dict[str, np.ndarray], n: int, t: int) -> np.ndarray:
    """[N, T] weight of each token: the attention mask where there is one (padding = 0)."""
    m = feeds.get("attention_mask")
    return np.ones((n, t)) if m is None else m.astype(np.float64)


def capture(tu: TUnits, feeds: dict[str, np.ndarray], batch: int = 256) -> dict[str, np.ndarray]:
    """Each transformer cut's values in the [N, C, P] view (P = block x tokens)."""
    h = hook(tu.ug, {c: HookSpec(capture=True) for c in tu.cuts})
    s = _sess(h.model)
    names = [h.outputs[c] for c in tu.cuts]
    n = len(next(iter(feeds.values())))
    parts: dict[str, list] = {c: [] for c in tu.cuts}
    for i in range(0, n, batch):
        outs = s.run(names, {k: v[i : i + batch] for k, v in feeds.items()})
        for c, o in zip(tu.cuts, outs, strict=True):
            parts[c].append(o)
    return {c: np.concatenate(v) for c, v in parts.items()}


def features(tu: TUnits, c: str, x: np.ndarray, tokw: np.ndarray):
    """(A [N*R, C*block], w [N*R]): the cut's features per token row, and the row weights."""
    lay = tu.ug.cuts[c].layout
    n, ch, p = x.shape
    blk = lay.block
    r = p // blk
    a = x.reshape(n, ch, blk, r).transpose(0, 3, 1, 2).reshape(n * r, ch * blk)
    w = tokw[:, :r].reshape(n * r) if tokw.shape[1] >= r else np.ones(n * r)
    return a.astype(np.float64), w


def moments(a: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sw = w.sum()
    mean = (w[:, None] * a).sum(0) / sw
    var = (w[:, None] * (a - mean) ** 2).sum(0) / sw
    return mean, var


# removal sets ----------------------------------------------------------------------------
def take_to_flops(tu: TUnits, order: list[tuple[str, str]], target: float, tol: float = 0.01):
    """Removes units in `order` until FLOPs reach `target` (never emptying a cut): stops at
    the first unit that would go below target x (1 - tol); if still above target x (1 + tol),
    fills with the next units of `order` that fit. Returns (removed [(cut, unit)], flops)."""
    left = {c: len(tu.unit_ids(c)) for c in tu.cuts}
    removed, cur, i = [], tu.f0, 0
    lo, hi = target * (1 - tol), target * (1 + tol)
    while i < len(order) and cur > target:
        c, u = order[i]
        i += 1
        if left[c] <= 1:
            continue
        if cur - tu.unit_cost[c] < lo:
            break
        removed.append((c, u))
        left[c] -= 1
        cur -= tu.unit_cost[c]
    for c, u in order[i:]:
        if cur <= hi:
            break
        if left[c] <= 1 or cur - tu.unit_cost[c] < lo:
            continue
        removed.append((c, u))
        left[c] -= 1
        cur -= tu.unit_cost[c]
    return removed, cur


def compile_removal(tu: TUnits, removed, consts: dict[str, float] | None = None,
                    model: onnx.ModelProto | None = None) -> onnx.ModelProto:  # fmt: skip
    """Compiles `removed` (constant consts[u], default 0) on `model` (default the canonical
    model; an edited copy of it with the same graph keeps the unit ids)."""
    ug = tu.ug if model is None else U.analyze(model, canonical=True)
    plan = Plan()
    for c, u in removed:
        plan.set_constant(u, {c: float((consts or {}).get(u, 0.0))})
    return compile_plan(ug, plan).model


def counts(tu: TUnits, removed) -> dict[str, list[int]]:
    rm = {c: 0 for c in tu.cuts}
    for c, _ in removed:
        rm[c] += 1
    out: dict[str, list[int]] = {"heads": [], "ffn": []}
    for c in tu.cuts:
        out["heads" if tu.kind[c] == "head" else "ffn"].append(len(tu.unit_ids(c)) - rm[c])
    return out


# FLAP ------------------------------------------------------------------------------------
def flap(tu: TUnits, acts, tokw, target: float):
    order, means, zs = [], {}, []
    fmeans = {}
    for c in tu.cuts:
        a, w = features(tu, c, acts[c], tokw)
        mean, var = moments(a, w)
        wt = tu.weight(c)
        col = tu.feature_index(c)
        per_feat = np.zeros(a.shape[1])
        per_feat[col] = var[col] * (wt**2).sum(1)  # row f of W <-> feature column col[f]
        ids = tu.unit_ids(c)
        blk = tu.ug.cuts[c].layout.block
        s = per_feat.reshape(len(ids), blk).sum(1)
        z = (s - s.mean()) / (s.std() + 1e-12)
        zs += [(float(zi), c, u) for zi, u in zip(z, ids, strict=True)]
        fmeans[c] = mean
        for k, u in enumerate(ids):
            means[u] = mean[k * blk : (k + 1) * blk]
    order = [(c, u) for _, c, u in sorted(zs)]
    removed, _ = take_to_flops(tu, order, target)
    # mean compensation: FFN neurons as scmopt constants, heads into the out-proj bias
    model = copy.deepcopy(tu.ug.model)
    consts = {}
    by_cut: dict[str, list[str]] = {}
    for c, u in removed:
        by_cut.setdefault(c, []).append(u)
    for c, us in by_cut.items():
        if tu.kind[c] == "ffn":
            consts.update({u: float(means[u][0]) for u in us})
            continue
        wt = tu.weight(c)
        col = tu.feature_index(c)
        ids = tu.unit_ids(c)
        blk = tu.ug.cuts[c].layout.block
        delta = np.zeros(wt.shape[1])
        for u in us:
            k = ids.index(u)
            for f in np.nonzero((col >= k * blk) & (col < (k + 1) * blk))[0]:
                delta += fmeans[c][col[f]] * wt[f]
        add_to_bias(model, tu.ug.cuts[c].consumers[0], delta)
    return removed, compile_removal(tu, removed, consts, model)


def add_to_bias(model: onnx.ModelProto, matmul: str, delta: np.ndarray) -> None:
    """Adds `delta` to the bias Add that follows MatMul `matmul` (or inserts one)."""
    g = model.graph
    node = next(n for n in g.node if n.name == matmul)
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type == "Add" and node.output[0] in n.input:
            other = [i for i in n.input if i != node.output[0]]
            if other and other[0] in inits and len(inits[other[0]].dims) == 1:
                b = numpy_helper.to_array(inits[other[0]])
                inits[other[0]].CopyFrom(
                    numpy_helper.from_array((b + delta).astype(b.dtype), other[0])
                )
                return
    name = f"{matmul}::flap_bias"
    g.initializer.append(numpy_helper.from_array(delta.astype(np.float32), name))
    out = node.output[0]
    node.output[0] = out + "::pre_bias"
    g.node.append(onnx.helper.make_node("Add", [node.output[0], name], [out], name=name))
    from scmopt.io import graph as G

    model.CopyFrom(G.canonicalize(model))


# Kwon et al. ------------------------------------------------------------------------------
def kwon_fisher(tu: TUnits, feeds, y, acts, eps: float = 1e-2) -> dict[str, float]:
    fisher = {}
    for c in tu.cuts:
        h = hook(tu.ug, {c: HookSpec(perturb=True)})
        s = _sess(h.model)
        dname = h.inputs[c]["delta"]
        x = acts[c].astype(np.float32)
        for u in tu.unit_ids(c):
            ch = [i for i, lab in enumerate(tu.ug.cuts[c].units) if lab == u]
            d = np.zeros_like(x)
            d[:, ch, :] = eps * x[:, ch, :]
            lp = ce(s.run(None, {**feeds, dname: d})[0], y)
            lm = ce(s.run(None, {**feeds, dname: -d})[0], y)
            g = (lp - lm) / (2 * eps)
            fisher[u] = float(np.mean(g**2))
    return fisher


def kwon(tu: TUnits, fisher, acts, tokw, target: float, rescale: bool = True):
    order = sorted(tu.all_units(), key=lambda cu: fisher[cu[1]] / tu.unit_cost[cu[0]])
    removed, _ = take_to_flops(tu, order, target)
    model = copy.deepcopy(tu.ug.model)
    scales = {}
    if rescale:
        gone = {u for _, u in removed}
        for c in tu.cuts:
            ids = tu.unit_ids(c)
            if not any(u in gone for u in ids):
                continue
            a, w = features(tu, c, acts[c], tokw)
            wt = tu.weight(c)
            col = tu.feature_index(c)
            blk = tu.ug.cuts[c].layout.block
            af = a[:, col]  # features in weight-row order
            gram = (w[:, None] * af).T @ af  # [F, F]
            k = gram * (wt @ wt.T)  # <x_f W_f, x_g W_g> summed over tokens
            unit_of_row = col // blk
            nu = len(ids)
            agg = np.zeros((nu, len(col)))
            agg[unit_of_row, np.arange(len(col))] = 1.0
            gu = agg @ k @ agg.T  # [units, units]
            keep = np.array([u not in gone for u in ids])
            gk = gu[np.ix_(keep, keep)]
            b = gu[keep].sum(1)  # target: every unit's contribution (original W x)
            s = np.linalg.solve(gk + 1e-8 * np.trace(gk) / len(gk) * np.eye(len(gk)), b)
            _, init = tu.consumer(c, model)
            wn = numpy_helper.to_array(init).copy()
            kept_ids = [u for u, kk in zip(ids, keep, strict=True) if kk]
            for u, sc in zip(kept_ids, s, strict=True):
                wn[unit_of_row == ids.index(u)] *= sc
                scales[u] = float(sc)
            init.CopyFrom(numpy_helper.from_array(wn, init.name))
    return removed, compile_removal(tu, removed, None, model), scales


# onnxsim --------------------------------------------------------------------------------
def attention_heads(model: onnx.ModelProto) -> list[int]:
    return [a.i for n in model.graph.node if n.op_type in ("Attention", "MultiHeadAttention")
            for a in n.attribute if a.name == "num_heads"]  # fmt: skip


def structural_flops(tu: TUnits, model: onnx.ModelProto) -> tuple[int | None, dict]:
    """FLOPs of a peer model counted on the decomposed graph: the original's FLOPs minus the
    per-unit FLOPs of every head / neuron it no longer has. Heads: num_heads of its fused
    Attention nodes (layers onnxsim left unfused keep all heads); FFN neurons and other cuts:
    the input dimension of the consumer weight (found by the original initializer name).
    None where a count cannot be read."""
    inits = {i.name: i for i in model.graph.initializer}
    removed: dict[str, int] = {}
    head_cuts = [c for c in tu.cuts if tu.kind[c] == "head"]
    nh = attention_heads(model)
    for i, c in enumerate(head_cuts):
        h = len(tu.unit_ids(c))
        removed[c] = h - nh[i] if i < len(nh) else 0
    for c in [c for c in tu.cuts if tu.kind[c] == "ffn"] + tu.other:
        node, w = tu.consumer(c)
        if w.name not in inits:
            return None, removed
        dims = list(inits[w.name].dims)
        trans = any(a.name == "transB" and a.i for a in node.attribute)
        kept = dims[1] if (node.op_type == "Gemm" and trans) else dims[0]
        removed[c] = len(tu.unit_ids(c)) - kept
    return tu.f0 - sum(tu.unit_cost[c] * k for c, k in removed.items()), removed


def equiv_flops(model: onnx.ModelProto, sample, seq: int) -> int:
    """count_flops (Conv/Gemm/MatMul) + the matmuls inside fused com.microsoft::Attention
    nodes (QKV projection 2*T*D*cols and QK^T, PV 2*2*T*T*(cols/3)), so a fused model is
    counted like the decomposed one."""
    f = cost.count_flops(model, sample)
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Attention" and n.input[1] in inits:
            d, cols = inits[n.input[1]].dims
            f += 2 * seq * d * cols + 4 * seq * seq * (cols // 3)
    return int(f)


def onnxsim_routes(raw: onnx.ModelProto, model_type: str, heads: int, hidden: int):
    """Graph forms on which onnxsim's head pruning is tried: (label, model) list."""
    import onnxsim
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    out = [("raw export", copy.deepcopy(raw))]
    notes = {}
    try:
        sm, ok = onnxsim.simplify(copy.deepcopy(raw))
        out.append(("onnxsim.simplify (its fuse_attention)", sm))
    except Exception as exc:  # noqa: BLE001
        notes["onnxsim.simplify"] = f"{type(exc).__name__}: {exc}"
    try:
        fo = FusionOptions("bert")
        for a in ("enable_gelu", "enable_bias_gelu", "enable_skip_layer_norm",
                  "enable_embed_layer_norm", "enable_bias_skip_layer_norm",
                  "enable_layer_norm", "enable_gelu_approximation"):  # fmt: skip
            if hasattr(fo, a):
                setattr(fo, a, False)
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".onnx") as tf:
            onnx.save(raw, tf.name)
            o = optimizer.optimize_model(tf.name, model_type="bert", num_heads=heads,
                                         hidden_size=hidden, optimization_options=fo,
                                         opt_level=0)  # fmt: skip
            out.append(("onnxruntime.transformers optimizer, attention fusion only", o.model))
            o2 = optimizer.optimize_model(tf.name, model_type=model_type, num_heads=heads,
                                          hidden_size=hidden, opt_level=0)  # fmt: skip
            out.append((f"onnxruntime.transformers optimizer ({model_type}, all fusions)",
                        o2.model))  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        notes["ort optimizer"] = f"{type(exc).__name__}: {exc}"
    return out, notes


def onnxsim_prune(model, s_heads: float, s_ffn: float):
    import onnxsim.pruning as P

    m = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if s_heads > 0:
            m = P.apply_attention_head_pruning(m, sparsity=s_heads)
        if s_ffn > 0:
            m = P.apply_structured_pruning(m, sparsity=s_ffn)
    return m


def onnxsim_finetune(original, pruned, calib_batches):
    from onnxsim.finetune import apply_pruning_finetune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return apply_pruning_finetune(copy.deepcopy(original), copy.deepcopy(pruned),
                                      calibration_data=calib_batches)  # fmt: skip


def onnxsim_to_flops(tu, model, target, heads_too: bool, iters: int = 10):
    """Bisects one sparsity s (heads and FFN chains alike, or FFN only) to `target` FLOPs
    (structural_flops); returns (model, s, flops, evaluations)."""
    cache = {}

    def at(s):
        if s not in cache:
            m = onnxsim_prune(model, s if heads_too else 0.0, s)
            fl, _ = structural_flops(tu, m)
            if fl is None:
                raise RuntimeError("cannot read the pruned model's unit counts")
            cache[s] = (fl, m)
        return cache[s][0]

    first_crossing(at, target, [round(0.1 * i, 2) for i in range(10)] + [0.95, 0.99], iters,
                   lambda lo, hi: abs(at(hi) - target) <= 0.01 * target)  # fmt: skip
    best = min(cache, key=lambda s: (abs(cache[s][0] - target), s))
    return cache[best][1], best, cache[best][0], len(cache)
