"""Running interchange interventions with sources from anywhere in the split.

A `HookedModel` is a model (the unit graph's canonical one, or a compiled one whose cuts lost
their removed channels) with a perturbation and a capture hook on every site, and optionally
a plan hook fed M and B (runtime.hooks). An interchange at cut t of base x with source x' is
run as two plain passes that capture t (on the bases and on the sources, wherever in the split
they are) and one pass on the bases that adds

    delta = M (mask * (a_t(x') - a_t(x)))

after the plan at t: in the [N, C, P] view that is M (x + mask (x' - x)) + B, the patched cut
of DESIGN §2 (removed units are never swapped and follow their kept parents through M). It is
exact when each sample is intervened on at one cut at most, which holds for every intervention
scmopt draws. Batches therefore only bound memory: the same draws give the same numbers at any
batch size, and on models that only run one sample at a time.

`Side` is one network on one split under one `InterventionSampler`; `compare` measures a
candidate side against a reference side into `metrics.Metrics`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from scmopt.evaluation.cells import extend
from scmopt.evaluation.metrics import Agreement, Metrics, Tally, flat, top1
from scmopt.evaluation.sampler import InterventionSampler
from scmopt.io.data import token_positions
from scmopt.plan import Plan
from scmopt.runtime import sessions as runtime
from scmopt.runtime.hooks import HookSpec, dynamic_batch, hook, plan_feeds
from scmopt.units.analysis import UnitGraph

Feeds = dict[str, np.ndarray]
Progress = Callable[[str, int, int], None]


def sites(ug: UnitGraph) -> list[str]:
    """Cuts with at least one prunable unit (the intervention sites), in topological order."""
    order = {out: i for i, n in enumerate(ug.model.graph.node) for out in n.output}
    found = [t for t, c in ug.cuts.items() if any(ug.units[u].prunable for u in c.units)]
    return sorted(found, key=lambda t: order.get(t, -1))


def kept_mask(ug: UnitGraph, cut: str, plan: Plan | None) -> np.ndarray:
    """Boolean per channel: the unit is kept (only kept units are ever swapped)."""
    removed = plan.removed if plan is not None else set()
    return np.array([u not in removed for u in ug.cuts[cut].units])


def split_batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive near-equal batches of at most `batch_size` samples covering 0..n."""
    k = max(1, -(-n // max(1, batch_size)))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def take(data: Feeds, rows: slice | np.ndarray) -> Feeds:
    """The samples `rows` of every array."""
    return {k: v[rows] for k, v in data.items()}


class HookedModel:
    """`model` with perturbation + capture hooks on `cuts` in one onnxruntime session.

    model: None for the unit graph's canonical model; a compiled model needs `kept` (cut ->
    kept channel indices). plan_inputs: the hooks also apply a plan whose M and B are fed per
    run. The model runs on batches when a batch of two gives the single-sample results
    (checked on `probe`), otherwise one sample per run; results are the same either way.
    """

    def __init__(
        self,
        ug: UnitGraph,
        probe: Feeds,
        *,
        model: onnx.ModelProto | None = None,
        kept: dict[str, np.ndarray] | None = None,
        cuts: list[str] | None = None,
        plan_inputs: bool = False,
        device: str = "auto",
    ) -> None:
        self.ug = ug
        self.sites = sites(ug) if cuts is None else list(cuts)
        src = ug.model if model is None else model
        dyn = dynamic_batch(src)
        self.batched = runtime.accepts_batch(dyn, probe, device)
        specs = {t: HookSpec(plan="input" if plan_inputs else "none", perturb=True, capture=True)
                 for t in self.sites}  # fmt: skip
        self.hooked = hook(ug, specs, model=dyn if self.batched else src, kept=kept)
        # no CPU arena: it would keep its largest run's memory between runs (EfficientNet-
        # Lite1's statistics passes: 1.3-1.8 GB, held through the curvature probes); dropping
        # and remaking the session after each pass instead raised the peak (9.3 GB, against
        # 7.3). The cost is time: Lite1 --keep 0.5 peaked at 5.1 GB without the arena, and its
        # held-out checks took 177 s against 99, its statistics 304 s against 244 (BENCHMARKS
        # §21); an arena shrunk after each pass would keep both (not tried)
        self.sess = runtime.session(self.hooked.model, device, spinning=False, arena=False)
        self.output = self.hooked.model.graph.output[0].name
        self.kept = kept
        self._zero: dict[tuple[str, int], np.ndarray] = {}
        self.channels = {
            t: len(kept[t]) if kept is not None and t in kept else ug.cuts[t].channels
            for t in self.sites
        }
        self.max_batch = self._max_batch(probe, plan_inputs)

    # site values one run may return (sets max_batch); a statistics round holds about six
    # such sets at once (plan and original: bases, sources, swaps)
    CAPTURE_BYTES = 192 * 2**20

    def _max_batch(self, probe: Feeds, plan_inputs: bool) -> int:
        """Samples per run whose captured site values stay under CAPTURE_BYTES: every site is
        captured at once, which at 240 x 240 inputs is tens of MB per sample (EfficientNet-
        Lite1: 256 samples per run reached 10.6 GB). Measured on one probe sample."""
        if not self.sites:
            return 1 << 30
        fixed = plan_feeds(self.hooked.inputs, self.ug, self.sites, None) if plan_inputs else {}
        _, caps = self.run(take(probe, slice(0, 1)), fixed, capture=True)
        per_sample = sum(v.nbytes for v in caps.values()) + 1
        return max(1, int(self.CAPTURE_BYTES // per_sample))

    def _zeros(self, cut: str, n: int) -> np.ndarray:
        """[n, C, 1] zero perturbation at `cut`, the same array for every run of n samples."""
        key = (cut, n)
        if key not in self._zero:
            self._zero[key] = np.zeros((n, self.channels[cut], 1), np.float32)
        return self._zero[key]

    def run(
        self,
        x: Feeds,
        fixed: Feeds | None = None,
        deltas: dict[str, np.ndarray] | None = None,
        capture: bool = False,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """First output and, with `capture`, every site's value [n, C, P] (this model's C).

        fixed: inputs fed as they are (plan M and B); deltas: cut -> [n, C, P] added after the
        plan (zero where absent)."""
        n = len(next(iter(x.values())))
        wanted = [self.output] + ([self.hooked.outputs[t] for t in self.sites] if capture else [])
        deltas = deltas or {}

        reuse = set(fixed or {})  # plan M and B, zero perturbations: uploaded once per array

        def feeds(rows: slice) -> Feeds:
            f = {**take(x, rows), **(fixed or {})}
            k = rows.stop - rows.start
            for t in self.sites:
                d, name = deltas.get(t), self.hooked.inputs[t]["delta"]
                if d is None:
                    f[name] = self._zeros(t, k)
                    reuse.add(name)
                else:
                    f[name] = np.ascontiguousarray(d[rows], dtype=np.float32)
            return f

        def run(f: Feeds) -> list[np.ndarray]:
            return self.sess.run_bound(wanted, f, reuse & set(f))

        if self.batched:
            res = run(feeds(slice(0, n)))
        else:
            each = [run(feeds(slice(i, i + 1))) for i in range(n)]
            res = [np.concatenate([r[k] for r in each]) for k in range(len(wanted))]
        caps = {
            t: r.reshape(n, self.channels[t], -1) for t, r in zip(self.sites, res[1:], strict=False)
        }
        return res[0], caps


class Network:
    """A HookedModel with its fixed inputs: the original (no plan), a plan through the plan
    hooks (`plan`), or a compiled artifact. `delta` maps a swap mask over the ORIGINAL cut's
    channels to the perturbation this network needs."""

    def __init__(self, model: HookedModel, plan: Plan | None = None, fixed: Feeds | None = None):
        self.model = model
        self.fixed = fixed or {}
        self._mix: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if plan is None:
            return
        for t in model.sites:
            rows, _ = plan.cut_rows(model.ug.cuts[t])
            folds = {i: r for i, r in rows.items() if r}
            if folds:
                cols = np.array(sorted({k for r in folds.values() for k in r}), dtype=np.int64)
                at = {int(k): j for j, k in enumerate(cols)}
                mix = np.zeros((len(folds), len(cols)), np.float32)
                for i, r in enumerate(folds.values()):
                    for k, a in r.items():
                        mix[i, at[k]] += a
                self._mix[t] = (np.array(list(folds), dtype=np.int64), cols, mix)

    @property
    def sites(self) -> list[str]:
        return self.model.sites

    def run(self, x: Feeds, deltas: dict[str, np.ndarray] | None = None,
            capture: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
        return self.model.run(x, self.fixed, deltas, capture)

    def delta(self, cut: str, mask: np.ndarray, diff: np.ndarray) -> np.ndarray:
        """[n, C, P] perturbation at `cut` for swap `mask` [n, C_original] and the captured
        source-minus-base values `diff` (this network's channels)."""
        kept = self.model.kept
        m = mask if kept is None or cut not in kept else mask[:, kept[cut]]
        d = m[:, :, None].astype(np.float32) * diff
        if cut in self._mix:  # folded rows follow their swapped parents: M (mask * diff)
            rows, cols, mix = self._mix[cut]
            d[:, rows] = np.matmul(mix, d[:, cols])
        return d


def interchange(net: Network, x: Feeds, base: dict[str, np.ndarray],
                source: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                capture: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """`net` on bases `x` with the units of `masks` (cut -> [n, C] bool) taking the values of
    the sources; base/source: captured site values of both. Each sample must be intervened on
    at one cut at most (then it is exact, see the module docstring)."""
    deltas = {t: net.delta(t, m, source[t] - base[t]) for t, m in masks.items() if m.any()}
    return net.run(x, deltas, capture)


class Side:
    """One network on one split under one sampler, batch by batch.

    cache=True memoises plain outputs and interchange outputs per (batch, cut, mask): for the
    reference network, which every candidate plan is measured against (common random
    numbers). Captures are kept for the current batch only; when the split is one batch the
    interchange sources are rows of its plain captures, not another pass (a held-out check of
    the zoo: 3 passes of the split instead of 4)."""

    def __init__(self, net: Network, data: Feeds, sampler: InterventionSampler,
                 batches: list[slice], cache: bool = False) -> None:  # fmt: skip
        self.net = net
        self.data = data
        self.sampler = sampler
        self.batches = batches
        self.cache: dict | None = {} if cache else None
        self._caps: tuple[int, dict, dict] | None = None

    def _captures(self, i: int, base: dict | None = None) -> tuple[dict, dict]:
        if self._caps is None or self._caps[0] != i:
            b = self.batches[i]
            if base is None:
                base = self.net.run(take(self.data, b), capture=True)[1]
            rows = self.sampler.sources[b]
            if len(self.batches) == 1:  # the batch is the split: sources are rows of it
                src = {t: v[rows] for t, v in base.items()}
            else:
                src = self.net.run(take(self.data, rows), capture=True)[1]
            self._caps = (i, base, src)
        return self._caps[1], self._caps[2]

    def plain(self, i: int, capture: bool = False) -> np.ndarray:
        """[nb, K] outputs of batch i on plain inputs (capture: keep its site values for the
        interchanges that follow)."""
        key = ("plain", i)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        out, caps = self.net.run(take(self.data, self.batches[i]), capture=capture)
        out = flat(out)
        if capture:
            self._caps = None
            self._captures(i, caps)
        if self.cache is not None:
            self.cache[key] = out
        return out

    def swapped(self, i: int, cut: str, mask: np.ndarray) -> np.ndarray:
        """[nb, K] outputs of batch i under the interchange at `cut` with `mask` [nb, C]."""
        key = (i, cut, mask.tobytes())
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        base, source = self._captures(i)
        x = take(self.data, self.batches[i])
        out = flat(interchange(self.net, x, base, source, {cut: mask})[0])
        if self.cache is not None:
            self.cache[key] = out
        return out

    def swapped_all(self, i: int, masks: dict[str, np.ndarray]) -> np.ndarray:
        """[nb, K] outputs of batch i with each sample intervened on where `masks` (cut ->
        [nb, C]) say; at most one cut per sample (compare(one_cut=True))."""
        key = (i, "one cut", _key(masks))
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        base, source = self._captures(i)
        x = take(self.data, self.batches[i])
        out = flat(interchange(self.net, x, base, source, masks)[0])
        if self.cache is not None:
            self.cache[key] = out
        return out


def _key(masks: dict[str, np.ndarray]) -> bytes:
    return b"".join(t.encode() + m.tobytes() for t, m in masks.items())


def compare(
    reference: Side,
    candidate: Side,
    kept: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
    *,
    interventions: bool = True,
    metric: Agreement = top1,
    progress: Progress | None = None,
    one_cut: bool = False,
    cells: dict[str, np.ndarray] | None = None,
) -> Metrics:
    """Metrics of `candidate` against `reference` on their (common) split and draws.

    kept: cut -> [C] bool kept channels (of the original cut); interchanges are made at these
    cuts, with the sampler's masks restricted to the kept units. Every sample is intervened on
    at every cut (a full sweep: 1 + cuts passes), or with `one_cut` at one cut drawn by the
    sampler (2 passes whatever the number of cuts: the same risk in expectation, each cut's
    IIA from its share of the samples; the search's held-out checks). `cells` (cut -> parent
    channel per channel, evaluation.cells.parents) also measures the cell-aligned IIA of a
    full sweep: the reference swaps each kept unit's cell, the candidate the same mask."""
    sampler, batches = reference.sampler, reference.batches
    cuts = list(kept) if interventions else []
    tally = Tally(sampler.n, cuts, labels, metric, positions=token_positions(reference.data))
    which = sampler.sites(len(cuts)) if one_cut else None
    total, done = len(batches) * (1 + (min(1, len(cuts)) if one_cut else len(cuts))), 0
    for i, b in enumerate(batches):
        tally.plain(b, reference.plain(i), candidate.plain(i, capture=bool(cuts)))
        done += 1
        if progress:
            progress("measure", done, total)
        if which is not None and cuts:
            at = which[b]
            masks = {t: sampler.mask(t, kept[t], b) & (at == k)[:, None]
                     for k, t in enumerate(cuts)}  # fmt: skip
            ref_out, cand_out = reference.swapped_all(i, masks), candidate.swapped_all(i, masks)
            for k, t in enumerate(cuts):
                rows = np.flatnonzero(at == k)
                if len(rows):
                    tally.swap(t, b.start + rows, ref_out[rows], cand_out[rows])
            done += 1
            if progress:
                progress("measure", done, total)
            continue
        for t in cuts:
            mask = sampler.mask(t, kept[t], b)
            ref_out, cand_out = reference.swapped(i, t, mask), candidate.swapped(i, t, mask)
            tally.swap(t, b, ref_out, cand_out)
            if cells is not None:  # a cut without folds: the cells are the kept units alone
                if t in cells:
                    ref_out = reference.swapped(i, t, extend(mask, cells[t]))
                tally.swap_cells(t, b, ref_out, cand_out)
            done += 1
            if progress:
                progress("measure", done, total)
    return tally.metrics(interventions)
