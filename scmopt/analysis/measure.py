"""How faithful a plan is: interventional risk, fidelity, IIA, accuracy and a flip certificate.

Every measurement goes through one hooked onnxruntime session (`Runner`): plan hooks take M and
B as inputs, so the original network (M = I, B = 0) and any plan run through the same session,
and interchange patching is driven by the `mask`/`src` inputs. Interventions are those of
DESIGN §2: a base x, a source x' (another sample of the same batch), one cut g, each KEPT unit
of g swapped with probability p; removed units are never intervened on; both networks get the
same intervention. `Evaluator` fixes the data and the random draws (per batch, from the seed),
so every plan is measured under the same interventions (common random numbers) and the
original's outputs are cached between plans.

Models whose batch size is baked in run one sample at a time; there an interchange is applied
as a `delta` (source minus base at the cut, both captured in a first pass), which is exact
because each sample is intervened on at one cut at most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from scmopt.errors import ScmoptError
from scmopt.plan import Plan
from scmopt.runtime import sessions as runtime
from scmopt.runtime.hooks import HookSpec, dynamic_batch, hook
from scmopt.units.analysis import UnitGraph

Progress = Callable[[str, int, int], None]
Feeds = dict[str, np.ndarray]


def sites(ug: UnitGraph) -> list[str]:
    """Cuts with at least one prunable unit (the intervention sites), in topological order."""
    order = {out: i for i, n in enumerate(ug.model.graph.node) for out in n.output}
    found = [t for t, c in ug.cuts.items() if any(ug.units[u].prunable for u in c.units)]
    return sorted(found, key=lambda t: order.get(t, -1))


def ancestors(ug: UnitGraph, among: list[str]) -> dict[str, set[str]]:
    """For each site, the other sites its value depends on (swaps there reach it)."""
    producer = {out: n for n in ug.model.graph.node for out in n.output}
    wanted = set(among)
    result = {}
    for t in among:
        seen: set[str] = set()
        stack = [t]
        found = set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            for i in node.input:
                if i in wanted and i != t:
                    found.add(i)
                stack.append(i)
        result[t] = found
    return result


def kept_mask(ug: UnitGraph, cut: str, plan: Plan | None) -> np.ndarray:
    """Boolean per channel: the unit is kept (only kept units are ever swapped)."""
    removed = plan.removed if plan is not None else set()
    return np.array([u not in removed for u in ug.cuts[cut].units])


def split_batches(n: int, batch_size: int) -> list[slice]:
    """Near-equal batches (no batch of one sample, which could not swap with another)."""
    k = max(1, -(-n // max(1, batch_size)))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def draw_sources(rng: np.random.Generator, n: int) -> np.ndarray:
    """For each sample, a random OTHER sample of the batch (itself only when n == 1)."""
    if n < 2:
        return np.zeros(n, np.int64)
    return ((np.arange(n) + rng.integers(1, n, size=n)) % n).astype(np.int64)


class Runner:
    """The hooked session: plan (M, B inputs), interchange patching and capture at every site."""

    def __init__(
        self,
        ug: UnitGraph,
        data: Feeds,
        *,
        device: str = "auto",
        batch_size: int = 256,
    ) -> None:
        self.ug = ug
        self.sites = sites(ug)
        self.output = ug.model.graph.output[0].name
        dyn = dynamic_batch(ug.model)
        self.batched = runtime.accepts_batch(dyn, data, device)
        base = dyn if self.batched else ug.model
        specs = {
            t: HookSpec(plan="input", patch=self.batched, perturb=not self.batched, capture=True)
            for t in self.sites
        }
        self.hooked = hook(ug, specs, model=base)
        self.sess = runtime.session(self.hooked.model, device, spinning=False)
        self.batch_size = batch_size if self.batched else 1
        self.channels = {t: ug.cuts[t].channels for t in self.sites}
        self._identity = self.plan_feeds(None)

    def plan_feeds(self, plan: Plan | None) -> Feeds:
        """M and B of every site for `plan` (None: the original network)."""
        if plan is None and getattr(self, "_identity", None) is not None:
            return self._identity
        feeds = {}
        for t in self.sites:
            names = self.hooked.inputs[t]
            cut = self.ug.cuts[t]
            if plan is not None and plan.touches(cut):
                m, b = plan.cut_affine(cut)
            else:
                m, b = np.eye(cut.channels), np.zeros((cut.channels, 1))
            feeds[names["M"]] = m.astype(np.float32)
            feeds[names["B"]] = b.astype(np.float32)
        return feeds

    def run(
        self,
        x: Feeds,
        plan_feeds: Feeds,
        masks: dict[str, np.ndarray] | None = None,
        src: np.ndarray | None = None,
        capture: bool = False,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Outputs (first graph output) and, with `capture`, site values [n, C, P] for one batch.

        masks: cut -> [n, C] swap indicators (0/1); src: [n] source index within the batch.
        """
        n = len(next(iter(x.values())))
        if self.batched:
            feeds = {**x, **plan_feeds}
            for t in self.sites:
                names = self.hooked.inputs[t]
                m = masks.get(t) if masks else None
                c = self.channels[t]
                feeds[names["mask"]] = (
                    np.zeros((n, c, 1), np.float32)
                    if m is None
                    else m.astype(np.float32).reshape(n, c, 1)
                )
                feeds[names["src"]] = np.arange(n, dtype=np.int64) if src is None else src
            wanted = [self.output] + (
                [self.hooked.outputs[t] for t in self.sites] if capture else []
            )
            res = self.sess.run(wanted, feeds)
            caps = {
                t: r.reshape(n, self.channels[t], -1)
                for t, r in zip(self.sites, res[1:], strict=False)
            }
            return res[0], caps
        return self._run_single(x, plan_feeds, masks, src, capture)

    def _run_single(self, x, plan_feeds, masks, src, capture):
        """Fixed batch size 1: per sample; an interchange becomes a delta (see module doc)."""
        n = len(next(iter(x.values())))
        wanted = [self.output] + [self.hooked.outputs[t] for t in self.sites]

        def one(i: int, deltas: dict[str, np.ndarray]) -> list[np.ndarray]:
            feeds = {k: v[i : i + 1] for k, v in x.items()}
            feeds.update(plan_feeds)
            for t in self.sites:
                name = self.hooked.inputs[t]["delta"]
                feeds[name] = deltas.get(t, np.zeros((1, self.channels[t], 1), np.float32))
            return self.sess.run(wanted, feeds)

        null = [one(i, {}) for i in range(n)]
        outs = [r[0] for r in null]
        base = [r[1:] for r in null]  # sources are read from the null pass
        caps = list(base)
        active = [t for t in self.sites if masks and t in masks and np.any(masks[t])]
        if active:
            assert src is not None
            for i in range(n):
                deltas = {}
                for k, t in enumerate(self.sites):
                    if t not in active or not np.any(masks[t][i]):
                        continue
                    c = self.channels[t]
                    diff = (base[src[i]][k] - base[i][k]).reshape(c, -1)
                    mm = plan_feeds[self.hooked.inputs[t]["M"]]
                    d = mm @ (masks[t][i].reshape(c, 1) * diff)
                    deltas[t] = d.reshape(1, c, -1).astype(np.float32)
                if deltas:
                    res = one(i, deltas)
                    outs[i] = res[0]
                    caps[i] = res[1:]
        out = np.concatenate(outs, axis=0)
        captured = {}
        if capture:
            for k, t in enumerate(self.sites):
                captured[t] = np.concatenate([c[k] for c in caps]).reshape(n, self.channels[t], -1)
        return out, captured


@dataclass
class Metrics:
    """Faithfulness of a plan on one data set (held out from the fit)."""

    risk: float | None  # normalised interventional risk (null + interchange at every site)
    fidelity: float  # P[argmax f == argmax f^P], plain inputs
    iia: float | None  # mean over sites of per-site IIA
    iia_per_cut: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None  # of the plan, when labels are given
    accuracy_original: float | None = None
    d2: float = 0.0  # E||f - f^P||^2 on plain inputs (unnormalised)
    risk_plain: float = 0.0  # d2 / E||f - E f||^2
    flip_bound: float = 1.0  # certificate: P(top-1 flips) <= P(margin <= 2e) + D2/e^2, min e
    n: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def flip_bound(margins: np.ndarray, d2: float) -> float:
    """min over e of P(margin <= 2e) + D2/e^2 (Markov), from the empirical margins of f."""
    m = np.sort(np.asarray(margins, dtype=np.float64))
    n = len(m)
    if n == 0:
        return 1.0
    if d2 <= 0:
        return float(np.mean(m <= 0))
    k = np.arange(n)  # e just below m[k]/2: k samples have margin <= 2e
    with np.errstate(divide="ignore"):
        bounds = k / n + 4.0 * d2 / np.square(m)
    bounds[m <= 0] = 1.0
    return float(min(1.0, bounds.min()))


class Evaluator:
    """Fixed data and fixed random interventions: measures any plan against the original."""

    def __init__(
        self,
        runner: Runner,
        data: Feeds,
        labels: np.ndarray | None = None,
        *,
        p: float = 0.5,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        self.runner = runner
        self.data = data
        self.labels = labels
        self.p = p
        self.seed = seed
        n = len(next(iter(data.values())))
        self.n = n
        self.batches = split_batches(n, batch_size or runner.batch_size)
        if not runner.batched:  # per-sample runs: swap sources still come from a block
            self.batches = split_batches(n, batch_size or 64)
        self._plain: list[np.ndarray] = []
        self._cache: dict[tuple, np.ndarray] = {}
        self._orig = runner.plan_feeds(None)
        for b in self.batches:
            f, _ = runner.run(self._x(b), self._orig)
            self._plain.append(f.reshape(f.shape[0], -1).astype(np.float64))
        f = np.concatenate(self._plain)
        self.variance = float(np.mean(np.sum((f - f.mean(0)) ** 2, axis=1)))
        top2 = np.sort(f, axis=1)[:, -2:] if f.shape[1] > 1 else np.concatenate([f, f], 1)
        self.margins = top2[:, 1] - top2[:, 0]

    def _x(self, b: slice) -> Feeds:
        return {k: v[b] for k, v in self.data.items()}

    def _draws(self, i: int, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Sources and per-unit uniforms of batch i: the same for every plan."""
        rng = np.random.default_rng([self.seed, i])
        src = draw_sources(rng, n)
        u = {t: rng.random((n, self.runner.channels[t])) for t in self.runner.sites}
        return src, u

    def swaps(self, i: int, n: int, cut: str, plan: Plan | None) -> tuple[np.ndarray, np.ndarray]:
        """(mask [n, C], src) of the interchange at `cut` for batch i under `plan`."""
        src, u = self._draws(i, n)
        keep = kept_mask(self.runner.ug, cut, plan)
        return (u[cut] < self.p) & keep[None, :], src

    def evaluate(
        self, plan: Plan | None, *, interventions: bool = True, progress: Progress | None = None
    ) -> Metrics:
        """Metrics of `plan` (None: the original, for a sanity check)."""
        pf = self.runner.plan_feeds(plan)
        sites_ = self.runner.sites if interventions else []
        total = len(self.batches) * (1 + len(sites_))
        done = 0
        sq_null = 0.0
        agree = 0
        correct = correct_orig = 0
        sq_site = dict.fromkeys(sites_, 0.0)
        hit_site = dict.fromkeys(sites_, 0)
        for i, b in enumerate(self.batches):
            x = self._x(b)
            f0 = self._plain[i]
            n = len(f0)
            fp, _ = self.runner.run(x, pf)
            fp = fp.reshape(n, -1).astype(np.float64)
            sq_null += float(np.sum((f0 - fp) ** 2))
            agree += int(np.sum(f0.argmax(1) == fp.argmax(1)))
            if self.labels is not None:
                y = self.labels[b]
                correct += int(np.sum(fp.argmax(1) == y))
                correct_orig += int(np.sum(f0.argmax(1) == y))
            done += 1
            if progress:
                progress("measure", done, total)
            for t in sites_:
                mask, src = self.swaps(i, n, t, plan)
                key = (i, t, mask.tobytes())
                fo = self._cache.get(key)
                if fo is None:
                    fo, _ = self.runner.run(x, self._orig, {t: mask}, src)
                    fo = fo.reshape(n, -1).astype(np.float64)
                    self._cache[key] = fo
                fi, _ = self.runner.run(x, pf, {t: mask}, src)
                fi = fi.reshape(n, -1).astype(np.float64)
                sq_site[t] += float(np.sum((fo - fi) ** 2))
                hit_site[t] += int(np.sum(fo.argmax(1) == fi.argmax(1)))
                done += 1
                if progress:
                    progress("measure", done, total)
        n = self.n
        var = max(self.variance, 1e-30)
        d2 = sq_null / n
        iia_per = {t: hit_site[t] / n for t in sites_}
        risk = None
        if interventions:
            risk = (sq_null + sum(sq_site.values())) / n / (1 + len(sites_)) / var
        return Metrics(
            risk=risk,
            fidelity=agree / n,
            iia=float(np.mean(list(iia_per.values())))
            if iia_per
            else (1.0 if interventions else None),
            iia_per_cut=iia_per,
            accuracy=correct / n if self.labels is not None else None,
            accuracy_original=correct_orig / n if self.labels is not None else None,
            d2=d2,
            risk_plain=d2 / var,
            flip_bound=flip_bound(self.margins, d2),
            n=n,
        )


def iter_batches(data: Feeds, batch_size: int) -> Iterator[tuple[slice, Feeds]]:
    """Near-equal batches of `data` with their slices."""
    n = len(next(iter(data.values())))
    for b in split_batches(n, batch_size):
        yield b, {k: v[b] for k, v in data.items()}


def measure(
    ug: UnitGraph,
    plan: Plan | None,
    data: Feeds,
    labels: np.ndarray | None = None,
    *,
    p: float = 0.5,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    interventions: bool = True,
) -> Metrics:
    """One-shot convenience: the metrics of `plan` on `data` (builds a Runner)."""
    if not data:
        raise ScmoptError("no data to measure on")
    runner = Runner(ug, data, device=device, batch_size=batch_size)
    ev = Evaluator(runner, data, labels, p=p, seed=seed)
    return ev.evaluate(plan, interventions=interventions)
