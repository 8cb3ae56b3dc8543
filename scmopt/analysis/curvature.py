"""Curvature of the output risk along unit replacements (DESIGN §2, "curvature estimators").

Replacing unit u at a cut by r_u(x) moves the activations by d = r_u(x) - a_u(x); to second
order the risk is E||J_u d||^2. Every estimator here returns kappa[cut][channel] with

    R_u(cut) ~= kappa * E||d||^2            (E||d||^2 summed over the channel's positions)

so scoring multiplies kappa by interventional variances or fold residuals, whatever the source:

- uniform:  kappa = 1 (variance pruning);
- layer:    one Frobenius norm per cut from random-sign probes, spread over units by the squared
            norms of their consumer weights (isotropic curvature at the consumer's output:
            exact for the last linear layer, blind to function-preserving rescalings);
- unit:     per unit, finite differences along its own replacement direction: forward,
            J d ~= [f(a + eps d) - f(a)] / eps (the search's default: one subgraph run per
            direction, half the central ones' cost), or central,
            J d ~= [f(a + eps d) - f(a - eps d)] / (2 eps);
- ablation: the forward code path with eps = 1: the exact effect of the replacement.

All probes go through `Prober`: the part of the network below each cut, extracted from the
plan-hooked model (so downstream replacements apply) and fed with cached upstream tensors;
many perturbed copies run in one onnxruntime call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from scmopt.io.graph import infer_shapes
from scmopt.runtime import sessions as runtime
from scmopt.runtime.hooks import HookSpec, dynamic_batch, hook, is_plan_input, plan_feeds
from scmopt.runtime.shared_weights import SharedWeights
from scmopt.units.analysis import UnitGraph

Feeds = dict[str, np.ndarray]


@dataclass
class Direction:
    """A unit's replacement at one cut: r = sum_k coef_k a_k + offset (offset [P] or [1])."""

    channels: list[int]  # channel positions of the unit in the cut
    pred: np.ndarray  # predictor channel indices
    coef: np.ndarray
    offset: np.ndarray

    def delta(self, base: np.ndarray) -> np.ndarray:
        """d = r - a for base values [n, C, P] -> [n, P]."""
        r = self.offset.reshape(1, -1) - base[:, self.channels[0], :]
        if len(self.pred):
            r = r + np.einsum("nkp,k->np", base[:, self.pred, :], self.coef)
        return r


@dataclass
class Curvature:
    """kappa per cut and channel (NaN: not estimated), and how it was obtained."""

    kappa: dict[str, np.ndarray]
    risk: dict[str, np.ndarray] = field(default_factory=dict)  # measured E||J d||^2
    energy: dict[str, np.ndarray] = field(default_factory=dict)  # E||d||^2 of those probes
    n: int = 0  # samples behind risk and energy
    method: str = "uniform"


def merge(parts: list[Curvature]) -> Curvature:
    """Pools probe results of several sample chunks (weighted by their sample counts)."""
    total = sum(c.n for c in parts)
    first = parts[0]
    risk = {t: sum(c.risk[t] * c.n for c in parts) / total for t in first.risk}
    energy = {t: sum(c.energy[t] * c.n for c in parts) / total for t in first.energy}
    kappa = {
        t: np.where(energy[t] > 1e-30, risk[t] / np.maximum(energy[t], 1e-30), 0.0) for t in risk
    }
    for t in kappa:
        kappa[t][np.isnan(risk[t])] = np.nan
    return Curvature(kappa, risk, energy, total, first.method)


class Prober:
    """Downstream subgraphs of a plan-hooked model, one per cut, fed from cached tensors."""

    def __init__(
        self,
        ug: UnitGraph,
        sites: list[str],
        *,
        batched: bool = True,
        device: str = "auto",
        max_batch: int = 512,
        max_elements: int = 1 << 24,
    ) -> None:
        self.ug = ug
        self.sites = sites
        self.device = device
        self.batched = batched
        self.max_batch = max_batch if batched else 1
        # values of the cut tensor per probe call: bounds one call's working memory (512 copies
        # of an ImageNet-size feature map are several GB)
        self.max_elements = max_elements
        base = dynamic_batch(ug.model) if batched else ug.model
        # dense plan hooks: the probes' subgraphs run many directions per sample, and there
        # the sparse hook's gather and scatter were slower than the product once rounds had
        # replaced many rows (EfficientNet-Lite1 rounds 3 / 4: 270 / 412 s against 170 / 104)
        hooked = hook(ug, {t: HookSpec(plan="input") for t in sites}, model=base, sparse=False)
        self.inputs = hooked.inputs
        model = infer_shapes(hooked.model)
        self.output = ug.model.graph.output[0].name
        g = model.graph
        graph_inputs = {i.name for i in g.input}
        inits = {i.name for i in g.initializer}
        types = _elem_types(model)
        self.subs: dict[str, onnx.ModelProto] = {}
        self.externals: dict[str, list[str]] = {}
        wanted: list[str] = []
        # the subgraphs' and the capture model's weights are held once and shared by their
        # sessions (771 MB of protos and 1.57 GB of sessions at EfficientNet-Lite1 otherwise)
        self.weights = SharedWeights()
        for t in sites:
            sub, ext = _downstream(model, t, self.output, types)
            self.subs[t] = self.weights.strip(sub)
            self.externals[t] = ext
            for e in ext:
                if e not in graph_inputs and e not in inits and e not in wanted:
                    wanted.append(e)
        cap = copy.deepcopy(model)
        have = {o.name for o in cap.graph.output}
        for e in wanted:
            if e not in have:
                cap.graph.output.append(helper.make_tensor_value_info(e, types.get(e, 1), None))
        self.capture_names = [self.output] + wanted
        self.capture_model = self.weights.strip(cap)
        self._sessions: dict[str, object] = {}

    def _session(self, key: str):
        if key not in self._sessions:
            model = self.capture_model if key == "" else self.subs[key]
            # no arena: each of these sessions would keep its largest probe batch's memory
            # (squeezenet, 32 samples of 224x224: peak RSS 12.9 GB with arenas, 2.5 GB without)
            self._sessions[key] = runtime.session(model, self.device, spinning=False, arena=False,
                                                  shared=self.weights)  # fmt: skip
        return self._sessions[key]

    def release(self, key: str | None = None) -> None:
        """Drops the session of cut `key` (every session: None), made again on its next probe,
        and returns the memory. The probes visit the cuts one by one and each session holds
        its own re-laid-out copy of its subgraph's weights (EfficientNet-Lite1: 0.9 GB for
        the 43 subgraphs, on shared weights), while making all 43 again takes ~2 s: `layer`
        and `unit` release each cut's session when they are done with it."""
        if key is None:
            self._sessions.clear()
        else:
            self._sessions.pop(key, None)
        runtime.return_memory()

    def cache(self, x: Feeds, plan_feeds: Feeds) -> Feeds:
        """Runs the hooked model once on `x`: outputs plus every tensor a subgraph needs."""
        feeds = {**x, **self._plan(plan_feeds)}
        sess = self._session("")
        if self.batched:
            res = sess.run(self.capture_names, feeds)
        else:
            n = len(next(iter(x.values())))
            parts = [
                sess.run(self.capture_names, {k: (v[i : i + 1] if k in x else v)
                                              for k, v in feeds.items()})
                for i in range(n)
            ]  # fmt: skip
            res = [np.concatenate([p[j] for p in parts]) for j in range(len(self.capture_names))]
        out = dict(zip(self.capture_names, res, strict=True))
        out.update(x)
        return out

    def plan_feeds(self, plan) -> Feeds:
        """This model's plan inputs for `plan` (its hooks are dense at every cut, the
        Runner's sparse at wide ones: the two take different inputs)."""
        return plan_feeds(self.inputs, self.ug, self.sites, plan)

    def _plan(self, plan_feeds: Feeds) -> Feeds:
        """The plan inputs among `plan_feeds` (Prober.plan_feeds, or a Runner's where every
        hook is dense)."""
        return {k: v for k, v in plan_feeds.items() if is_plan_input(k)}

    def base(self, cut: str, cache: Feeds) -> np.ndarray:
        """Values of the cut as the readers see them (after the plan), [n, C, P]."""
        return self.ug.cuts[cut].layout.to_ncp(cache[cut])

    def directional(
        self,
        cut: str,
        cache: Feeds,
        plan_feeds: Feeds,
        make: Callable[[np.ndarray], np.ndarray],
        count: int,
        eps: float,
        central: bool = True,
    ) -> np.ndarray:
        """J d estimates [count, n, O] for directions make(idx) -> [len(idx), n, C, P]: central
        differences (f(v + eps d) - f(v - eps d)) / 2 eps, two subgraph runs per direction, or
        forward ones (f(v + eps d) - f(v)) / eps, one run per direction plus one of f(v). f(v)
        is the subgraph's own output, not the capture model's: the two graphs round apart
        (~1e-6 of |f|), which at eps = 0.05 would swamp the J d of units with little effect."""
        raw = cache[cut]
        n = raw.shape[0]
        shape = raw.shape[1:]
        base = self.base(cut, cache).astype(np.float32)
        ext = [e for e in self.externals[cut] if e != cut]
        plan = self._plan(plan_feeds)
        sess = self._session(cut)
        reps_per_dir = 2 if central else 1
        copies = min(self.max_batch, self.max_elements // max(1, int(np.prod(shape))))
        k = max(1, copies // max(1, n * reps_per_dir))
        out = np.empty((count, n, _out_size(cache[self.output])), np.float64)

        def run(v: np.ndarray, reps: int) -> np.ndarray:
            """The subgraph on cut values v ([reps * n, ...]), the other inputs repeated."""
            feeds = {cut: v, **{kk: vv for kk, vv in plan.items() if kk in self.externals[cut]}}
            for e in ext:
                if e not in plan:
                    feeds[e] = np.concatenate([cache[e]] * reps) if reps > 1 else cache[e]
            return self._run_sub(sess, feeds, reps * n).astype(np.float64)

        f0 = None if central else run(raw, 1).reshape(n, -1)
        for start in range(0, count, k):
            idx = np.arange(start, min(count, start + k))
            d = make(idx).astype(np.float32)  # [m, n, C, P]
            m = len(idx)
            vals = [base[None] + eps * d]
            if central:
                vals.append(base[None] - eps * d)
            v = np.concatenate(vals).reshape(reps_per_dir * m * n, *base.shape[1:])
            v = self.ug.cuts[cut].layout.from_ncp(v, (len(v), *shape))
            res = run(v, reps_per_dir * m).reshape(reps_per_dir, m, n, -1)
            if central:
                out[idx] = (res[0] - res[1]) / (2 * eps)
            else:
                out[idx] = (res[0] - f0[None]) / eps
        return out

    def _run_sub(self, sess, feeds: Feeds, n: int) -> np.ndarray:
        if self.batched:  # the plan's M and B stay on the device between probes
            plan = [k for k in feeds if is_plan_input(k)]
            return sess.run_bound([self.output], feeds, plan)[0].reshape(n, -1)
        batch = {k for k in feeds if not is_plan_input(k)}
        rows = [
            sess.run([self.output], {k: (v[i : i + 1] if k in batch else v)
                                     for k, v in feeds.items()})[0]
            for i in range(n)
        ]  # fmt: skip
        return np.concatenate(rows).reshape(n, -1)


def _out_size(f: np.ndarray) -> int:
    return int(np.prod(f.shape[1:])) if f.ndim > 1 else 1


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def _downstream(
    model: onnx.ModelProto, start: str, output: str, types: dict[str, int]
) -> tuple[onnx.ModelProto, list[str]]:
    """The nodes that depend on tensor `start`, as a model whose inputs are `start` and every
    other tensor those nodes read from outside (upstream activations, plan inputs)."""
    g = model.graph
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            readers.setdefault(name, []).append(i)
    chosen: set[int] = set()
    stack = [start]
    while stack:
        for i in readers.get(stack.pop(), []):
            if i not in chosen:
                chosen.add(i)
                stack.extend(g.node[i].output)
    _pull_shape_chains(g, chosen, types)
    nodes = [g.node[i] for i in sorted(chosen)]
    produced = {o for n in nodes for o in n.output}
    inits = {i.name: i for i in g.initializer}
    externals: list[str] = []
    used_inits = []
    for n in nodes:
        for name in n.input:
            if not name or name in produced:
                continue
            if name in inits:
                if inits[name] not in used_inits:
                    used_inits.append(inits[name])
            elif name not in externals:
                externals.append(name)
    if start not in externals:
        externals.insert(0, start)
    inputs = [helper.make_tensor_value_info(e, types.get(e, 1), None) for e in externals]
    outputs = [helper.make_tensor_value_info(output, types.get(output, 1), None)]
    if output not in produced:  # the output does not depend on this cut
        nodes = [helper.make_node("Identity", [start], ["__unused__"])]
        outputs = [helper.make_tensor_value_info("__unused__", types.get(start, 1), None)]
    graph = helper.make_graph(nodes, f"below_{start}", inputs, outputs, list(used_inits))
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    return sub, externals


def _pull_shape_chains(g: onnx.GraphProto, chosen: set[int], types: dict[str, int]) -> None:
    """Adds to `chosen` the nodes computing integer tensors (shapes, indices) the chosen nodes
    read: fed from outside they would be tiled along axis 0 with the probe batch ([B, -1] ->
    [B, -1, B, -1]); computed inside they follow it. Their float inputs stay external."""
    producer = {o: i for i, n in enumerate(g.node) for o in n.output}
    ints = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    stack = [name for i in chosen for name in g.node[i].input]
    while stack:
        name = stack.pop()
        i = producer.get(name)
        if i is None or i in chosen or types.get(name) not in ints:
            continue
        chosen.add(i)
        stack.extend(g.node[i].input)


# estimators --------------------------------------------------------------------------------
def uniform(ug: UnitGraph, sites: list[str]) -> Curvature:
    """kappa = 1: risk scores become variances (variance pruning)."""
    return Curvature({t: np.ones(ug.cuts[t].channels) for t in sites}, method="uniform")


def consumer_norms(ug: UnitGraph, cut: str) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: (mean over the channel's block positions of the squared L2 norm of its
    consumer weight rows, summed over consumers; L1 norm of all its consumer weights)."""
    l2 = np.zeros(ug.cuts[cut].channels)
    l1 = np.zeros(ug.cuts[cut].channels)
    for feats in ug.weight_views(cut):
        l2 += np.mean(np.sum(feats**2, axis=2), axis=1)
        l1 += np.sum(np.abs(feats), axis=(1, 2))
    return l2, l1


def coupling(ug: UnitGraph, cut: str, kappa: np.ndarray) -> np.ndarray:
    """K_uv ~ J_u^T J_v between channels of a cut: sqrt(kappa_u kappa_v) times the cosine of
    their consumer weight columns (position-matched), the isotropic consumer-output model of
    the layer estimator; the diagonal is kappa itself."""
    c = ug.cuts[cut]
    m = np.concatenate([v.reshape(c.channels, -1) for v in ug.weight_views(cut)], axis=1)
    norm = np.linalg.norm(m, axis=1)
    norm[norm == 0] = 1.0
    cos = (m @ m.T) / np.outer(norm, norm)
    k = np.sqrt(np.clip(np.nan_to_num(kappa), 0, None))
    return cos * np.outer(k, k)


def random_signs(rng: np.random.Generator, kept: np.ndarray, n: int, p: int, count: int):
    """A direction factory of Rademacher probes on kept channels."""

    def make(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), n, len(kept), p), np.float32)
        for j, i in enumerate(idx):
            r = np.random.default_rng([int(rng.integers(1 << 31)), int(i)])
            out[j] = r.choice(np.array([-1.0, 1.0], np.float32), size=(n, len(kept), p))
        out *= kept[None, None, :, None]
        return out

    return make


def layer(
    prober: Prober,
    cache: Feeds,
    plan_feeds: Feeds,
    kept: dict[str, np.ndarray],
    *,
    probes: int = 4,
    eps: float = 0.05,
    seed: int = 0,
    central: bool = True,
) -> Curvature:
    """Per cut: ||J||_F^2 over kept coordinates from random-sign probes, spread over units in
    proportion to their consumer weight norms (kappa_out isotropic at the consumer output)."""
    kappa = {}
    for t in prober.sites:
        base = prober.base(t, cache)
        n, c, p = base.shape
        keep = kept[t].astype(np.float32)
        scale = float(np.sqrt(np.mean(base[:, kept[t]] ** 2))) or 1.0
        make = random_signs(np.random.default_rng([seed, len(kappa)]), keep, n, p, probes)
        jd = prober.directional(t, cache, plan_feeds, make, probes, eps * scale, central)
        frob = float(np.mean(np.sum(jd**2, axis=2)))  # E||J v||^2 = ||J_K||_F^2 for unit signs
        l2, _ = consumer_norms(prober.ug, t)
        denom = p * float(np.sum(l2[kept[t]])) or 1.0
        kappa[t] = frob * l2 / denom
        prober.release(t)
    return Curvature(kappa, method="layer")


def unit(
    prober: Prober,
    cache: Feeds,
    plan_feeds: Feeds,
    directions: dict[str, dict[str, Direction]],
    *,
    eps: float = 0.05,
    central: bool = True,
) -> Curvature:
    """Per unit: E||J d||^2 / E||d||^2 along its replacement direction, by finite differences
    (central or forward, eps relative to d) or, with eps = 1 and central = False, the exact
    effect."""
    kappa = {}
    risk = {}
    energy = {}
    n = len(cache[prober.output])
    for t, dirs in directions.items():
        c = prober.ug.cuts[t].channels
        kappa[t] = np.full(c, np.nan)
        risk[t] = np.full(c, np.nan)
        energy[t] = np.full(c, np.nan)
        if not dirs:
            continue
        base = prober.base(t, cache)
        n, _, p = base.shape
        order = list(dirs)
        deltas = np.stack([dirs[u].delta(base) for u in order])  # [m, n, P]

        def make(idx: np.ndarray, deltas=deltas, order=order, dirs=dirs, shape=base.shape):
            out = np.zeros((len(idx), *shape), np.float32)
            for j, i in enumerate(idx):
                for ch in dirs[order[i]].channels:
                    out[j, :, ch, :] = deltas[i]
            return out

        jd = prober.directional(t, cache, plan_feeds, make, len(order), eps, central)
        prober.release(t)
        num = np.mean(np.sum(jd**2, axis=2), axis=1)  # [m]
        den = np.mean(np.sum(deltas.astype(np.float64) ** 2, axis=2), axis=1)
        for i, u in enumerate(order):
            ch = dirs[u].channels
            risk[t][ch] = num[i]
            energy[t][ch] = den[i]
            kappa[t][ch] = num[i] / den[i] if den[i] > 1e-30 else 0.0
    method = "ablation" if eps >= 1 and not central else "unit"
    return Curvature(kappa, risk, energy, n, method=method)
