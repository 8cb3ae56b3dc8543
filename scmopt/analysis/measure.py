"""How faithful a plan is, for the search: its metrics against the original network.

Every measurement goes through one hooked onnxruntime session (`Runner`): plan hooks take M
and B as inputs, so the original network (M = I, B = 0) and any plan run through the same
session; interchanges are fed as perturbations (evaluation.interchange). Interventions are
those of DESIGN §2, drawn once per split by evaluation.sampler.InterventionSampler: a base x,
a source x' anywhere in the split, one cut g, each KEPT unit of g swapped with probability p;
removed units are never intervened on; both networks get the same intervention. `Evaluator`
fixes the data and the draws, so every plan is measured under the same interventions (common
random numbers), and caches the original's outputs between plans. The numbers themselves come
from evaluation.metrics; `batch_size` only bounds memory and changes none of them.
"""

from __future__ import annotations

import numpy as np

from scmopt.errors import ScmoptError
from scmopt.evaluation.agreements import TOP1, Metric
from scmopt.evaluation.interchange import (
    Feeds,
    HookedModel,
    Network,
    Progress,
    Side,
    compare,
    kept_mask,
    sites,
    split_batches,
    take,
)
from scmopt.evaluation.metrics import Metrics
from scmopt.evaluation.sampler import InterventionSampler
from scmopt.plan import Plan
from scmopt.runtime.hooks import plan_feeds
from scmopt.units.analysis import UnitGraph

__all__ = ["Evaluator", "Metrics", "Runner", "ancestors", "kept_mask", "measure", "sites",
           "split_batches"]  # fmt: skip


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


class Runner(HookedModel):
    """The canonical model hooked at every site: plan (M, B inputs), perturbation, capture.

    batch_size: how many samples one run takes (1 when the model only runs sample by sample).
    """

    def __init__(
        self,
        ug: UnitGraph,
        data: Feeds,
        *,
        device: str = "auto",
        batch_size: int = 256,
    ) -> None:
        super().__init__(ug, data, plan_inputs=True, device=device)
        # a memory knob only: no number depends on it
        self.batch_size = min(batch_size, self.max_batch) if self.batched else 1
        self._identity = self.plan_feeds(None)

    def plan_feeds(self, plan: Plan | None) -> Feeds:
        """The plan inputs of every site for `plan` (None: the original network)."""
        if plan is None and getattr(self, "_identity", None) is not None:
            return self._identity
        return plan_feeds(self.hooked.inputs, self.ug, self.sites, plan)

    def network(self, plan: Plan | None) -> Network:
        """The network of `plan` (None: the original) on this session."""
        return Network(self, plan, self.plan_feeds(plan))

    CACHE_BYTES = 512 * 2**20  # the original's captures kept between statistics rounds

    def original_captures(self, data: Feeds, rows: slice) -> dict[str, np.ndarray]:
        """Site values of the original network on data[rows] (plain inputs): the same in every
        statistics round of a search, so they are cached when the whole split's fit in
        CACHE_BYTES. Not a part of it: a part saves that part of a pass per round and holds
        the budget through the probes (EfficientNet-Lite1: 3 of 21 batches, 0.53 GB)."""
        cache = self.__dict__.setdefault("_orig_caps", {})
        key = (id(data), rows.start, rows.stop)
        if key in cache and cache[key][0] is data:
            return cache[key][1]
        caps = self.network(None).run(take(data, rows), capture=True)[1]
        n = len(next(iter(data.values())))
        per_sample = sum(v.nbytes for v in caps.values()) / max(rows.stop - rows.start, 1)
        if per_sample * n <= self.CACHE_BYTES:
            cache[key] = (data, caps)
        return caps


class Evaluator:
    """Fixed data and fixed random interventions: measures any plan against the original.

    Guaranteed: the same (data, p, seed) give the same draws and the same Metrics for a plan,
    whatever `batch_size` (and whether the model runs on batches or sample by sample)."""

    def __init__(
        self,
        runner: Runner,
        data: Feeds,
        labels: np.ndarray | None = None,
        *,
        p: float = 0.5,
        seed: int = 0,
        batch_size: int | None = None,
        metric: Metric = TOP1,
        one_cut: bool = False,
    ) -> None:
        self.runner = runner
        self.metric = metric
        self.one_cut = one_cut  # each sample intervened on at one cut (interchange.compare)
        self.data = data
        self.labels = labels
        n = len(next(iter(data.values())))
        self.n = n
        self.sampler = InterventionSampler(n, p, seed)
        # per-sample models run one sample per call anyway: 64 only bounds the captures held
        size = batch_size or (runner.batch_size if runner.batched else 64)
        self.batches = split_batches(n, min(size, runner.max_batch))  # memory only
        self.reference = Side(runner.network(None), data, self.sampler, self.batches, cache=True)

    def evaluate(
        self, plan: Plan | None, *, interventions: bool = True, progress: Progress | None = None
    ) -> Metrics:
        """Metrics of `plan` (None: the original, for a sanity check)."""
        cand = Side(self.runner.network(plan), self.data, self.sampler, self.batches)
        kept = {t: kept_mask(self.runner.ug, t, plan) for t in self.runner.sites}
        return compare(self.reference, cand, kept, self.labels, interventions=interventions,
                       metric=self.metric, progress=progress, one_cut=self.one_cut)  # fmt: skip


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
    metric: Metric = TOP1,
) -> Metrics:
    """One-shot convenience: the metrics of `plan` on `data` (builds a Runner)."""
    if not data:
        raise ScmoptError("no data to measure on")
    runner = Runner(ug, data, device=device, batch_size=batch_size)
    ev = Evaluator(runner, data, labels, p=p, seed=seed, metric=metric)
    return ev.evaluate(plan, interventions=interventions)
