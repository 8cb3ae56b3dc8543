"""Streaming float64 moments per cut, under the interventional distribution of DESIGN §2.

Constants and folds are fitted to what happens under the family I = {null} + {interchange at
each site}, each member with weight 1/(G+1). Seen from one cut g, the members fall into three
kinds:

- null, and swaps at sites that are not ancestors of g: g sees plain values;
- a swap at g itself: its moments follow in closed form from plain moments (b, s independent,
  m_k ~ Bernoulli(p)), so no extra passes are needed:
      E[a~_k a_j]            = (1-p) E[a_k a_j] + p mu_k mu_j      (k swapped, j not)
      E[a~_k a~_l], k != l   = ((1-p)^2 + p^2) E[a_k a_l] + 2p(1-p) mu_k mu_l
      E[a~_k^2]              = E[a_k^2]
  (products of means taken per position, then pooled);
- swaps at ancestor sites: measured, from a seeded fraction of the calibration samples, each
  run with one interchange at a random site (sources from the whole split,
  evaluation.sampler), so the moments do not depend on the batch size.

All passes run with the current plan applied (plan hooks), so downstream cuts see upstream
replacements. Only sums are kept: per-position first moments [C, P] and pooled second moments
[C, C]; activations are never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from scmopt.analysis.measure import Runner, ancestors, kept_mask, split_batches
from scmopt.evaluation.interchange import interchange, take
from scmopt.evaluation.sampler import InterventionSampler
from scmopt.plan import Plan

Progress = Callable[[str, int, int], None]


class Values(str, Enum):
    """Whose values a moment or fit target refers to: the network under the current plan, or
    the original network on the same inputs and interventions (collected when asked)."""

    PLAN = "p"
    ORIGINAL = "o"


WIDE = 512  # channels from which a cut's products take several samples at once (_gram)
ROWS = 1024  # rows (samples x positions) per float32 product at wide cuts


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_i a_i b_i^T over samples i of [n, C, P] float32 arrays, summed in float64 across
    products. One sample per product (the batched matmul held all n [C, C] results: 1.4 GB at
    C = 2 x 1,152, n = 64 on EfficientNet-Lite1). At cuts of >= WIDE channels with few
    positions the float64 accumulation of each [C, C] product cost more than the product
    (C = 2,304, P = 64: 54 ms per sample, 14 ms with 16 samples per product), so there one
    product takes ceil(ROWS / P) samples; narrower cuts (the whole zoo) keep one per product,
    bit for bit as before."""
    n, c, p = a.shape
    out = np.zeros((c, b.shape[1]))
    step = 1 if c < WIDE else max(1, min(n, -(-ROWS // p)))
    if step == 1:
        for ai, bi in zip(a, b, strict=True):
            out += ai @ bi.T
        return out
    for s in range(0, n, step):
        ai = a[s : s + step].transpose(1, 0, 2).reshape(c, -1)
        bi = b[s : s + step].transpose(1, 0, 2).reshape(b.shape[1], -1)
        out += ai @ bi.T
    return out


@dataclass
class Moments:
    """Streaming sums for one cut: per-position means and position-pooled second moments.

    Values are shifted by the first sample's channel means before float32 products (per-sample
    [C, P] x [P, C] matmuls), then summed in float64: fast, and no cancellation when a channel's
    mean is large against its spread. With `pooled` (dynamic spatial size) first moments are
    pooled over positions too.
    """

    channels: int
    positions: int
    pooled: bool = False
    n: int = 0
    s1: np.ndarray = field(init=False)  # [C, P] sum over samples of shifted values
    s2: np.ndarray = field(init=False)  # [C, C] sum over samples of (1/P) sum_p y y^T
    shift: np.ndarray | None = None  # [C]
    npos: float = 0.0  # sum over samples of the number of positions
    # with token weights (padding masks): per-position weight sums [P] ([1] pooled); None
    # while every position of every sample counts
    wpos: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.s1 = np.zeros((self.channels, 1 if self.pooled else self.positions))
        self.s2 = np.zeros((self.channels, self.channels))

    def add(self, x: np.ndarray, w: np.ndarray | None = None) -> None:
        """x: [n, C, P] values of n samples; w: [n, P] 0/1 weights of the positions (padding
        tokens 0: they count in no moment), None: all count."""
        n, c, p = x.shape
        if n == 0:
            return
        if self.shift is None:  # the first sample's means, whatever the batching; kept
            # exactly as the float32 value subtracted below
            first = x[0] if w is None else x[0][:, w[0] > 0]
            first = first if first.size else x[0]
            self.shift = first.mean(axis=1, dtype=np.float64).astype(np.float32).astype(float)
        y = x.astype(np.float32) - self.shift.astype(np.float32)[None, :, None]
        if w is not None or self.wpos is not None:
            self._add_weighted(y, np.ones((n, p)) if w is None else w)
            return
        if self.pooled:
            self.s1[:, 0] += y.mean(axis=2, dtype=np.float64).sum(axis=0)
        else:
            self.s1 += y.sum(axis=0, dtype=np.float64)
        self.s2 += _gram(y, y) / p
        self.n += n
        self.npos += n * p

    def _add_weighted(self, y: np.ndarray, w: np.ndarray) -> None:
        """Token-weighted sums: moments are over the positions with weight 1 (see add)."""
        n, _, p = y.shape
        w32 = w.astype(np.float32)
        if self.wpos is None:
            self.wpos = np.zeros(1 if self.pooled else p)
            if self.n:  # earlier unweighted samples: every position counted
                self.wpos += self.n * (p if self.pooled else 1)
                self.s1 *= p if self.pooled else 1
                self.s2 *= p
        yw = y * w32[:, None, :]
        if self.pooled:
            self.s1[:, 0] += yw.sum(axis=(0, 2), dtype=np.float64)
            self.wpos += float(w.sum())
        else:
            self.s1 += yw.sum(axis=0, dtype=np.float64)
            self.wpos += w.sum(axis=0)
        self.s2 += _gram(yw, y)
        self.n += n
        self.npos += float(w.sum())

    def _shift(self) -> np.ndarray:
        return np.zeros(self.channels) if self.shift is None else self.shift

    @property
    def mean(self) -> np.ndarray:
        """[C, P] per-position means ([C, 1] when pooled)."""
        if self.wpos is not None:
            return self.s1 / np.maximum(self.wpos, 1e-30)[None, :] + self._shift()[:, None]
        return self.s1 / max(self.n, 1) + self._shift()[:, None]

    @property
    def second(self) -> np.ndarray:
        """[C, C] E[a a^T], pooled over positions (over the counted positions with weights)."""
        s = self._shift()
        if self.wpos is not None:
            tokens = max(float(self.wpos.sum()) if self.pooled else self.npos, 1e-30)
            m = self.s1.sum(axis=1) / tokens
            return self.s2 / tokens + np.outer(s, m) + np.outer(m, s) + np.outer(s, s)
        m = self.s1.mean(axis=1) / max(self.n, 1)
        return self.s2 / max(self.n, 1) + np.outer(s, m) + np.outer(m, s) + np.outer(s, s)

    @property
    def mean_positions(self) -> float:
        return self.npos / max(self.n, 1)


def pooled_outer(mu: np.ndarray) -> np.ndarray:
    """mean over positions of mu_p mu_p^T, for mu [C, P]."""
    return (mu @ mu.T) / mu.shape[1]


@dataclass
class CutStats:
    """Moments of one cut under I: plain, swap at this cut (closed form), upstream swaps."""

    cut: str
    plain: Moments
    up: Moments
    w_plain: float  # weight of members of I under which the cut sees plain values
    w_same: float  # weight of the swap at this cut (0 when it is not a site)
    w_up: float  # weight of swaps at ancestor sites
    p: float
    original: bool = False  # moments hold [plan; original] values (2C channels), see collect
    # results derived from these moments alone (covariances, fold selections): valid as long
    # as the moments are, so they live and die with them; a tuple key holds the Values it
    # reads (Stats.forget drops by them)
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def channels(self) -> int:
        return self.plain.channels // 2 if self.original else self.plain.channels

    def _weights(self) -> tuple[float, float, float]:
        wp, ws, wu = self.w_plain, self.w_same, self.w_up
        if self.up.n == 0:  # nothing measured upstream: plain values stand in for them
            wp, wu = wp + wu, 0.0
        return wp, ws, wu

    def _rows(self, which: str) -> slice:
        c = self.channels
        return slice(c, 2 * c) if self.original and which == Values.ORIGINAL else slice(0, c)

    def _mean_all(self) -> np.ndarray:
        if "mean" not in self.memo:  # [2C, P] at per-position cuts: every refit asks for it
            wp, ws, wu = self._weights()
            mu = (wp + ws) * self.plain.mean
            if wu:
                mu = mu + wu * self.up.mean
            self.memo["mean"] = mu
        return self.memo["mean"]

    @property
    def mean(self) -> np.ndarray:
        """[C, P] per-position means under I (swaps at the cut leave them unchanged)."""
        return self._mean_all()[self._rows(Values.PLAN)]

    @property
    def target_mean(self) -> np.ndarray:
        """[C, P] means of the ORIGINAL network's values (the plan's without `original`)."""
        return self._mean_all()[self._rows(Values.ORIGINAL)]

    def second(self, swapped: int, a: Values = Values.PLAN, b: Values = Values.PLAN) -> np.ndarray:
        """E_I[a a^T] pooled, for off-diagonal pairs of which `swapped` (0, 1, 2) units are
        swapped when this cut is intervened on (diagonal entries: always E[a^2]). a, b: rows
        and columns from the plan's ("p") or the original network's ("o") values."""
        wp, ws, wu = self._weights()
        ra, rb = self._rows(a), self._rows(b)
        s = self.plain.second[ra, rb]
        m = (self.plain.mean[ra] @ self.plain.mean[rb].T) / self.plain.mean.shape[1]
        p = self.p
        if swapped == 2:
            c2 = (1 - p) ** 2 + p**2
            same = c2 * s + (1 - c2) * m
        elif swapped == 1:
            same = (1 - p) * s + p * m
        else:
            same = s.copy()
        if a == b:
            np.fill_diagonal(same, np.diag(s))
        out = wp * s + ws * same
        if wu:
            out = out + wu * self.up.second[ra, rb]
        return out

    def covariance(
        self, swapped: int, a: Values = Values.PLAN, b: Values = Values.PLAN
    ) -> np.ndarray:
        """Within-position covariance under I (the per-position intercepts absorb the means)."""
        cache = self.memo
        key = ("cov", swapped, a, b)
        if key not in cache:
            mu = self._mean_all()
            ma, mb = mu[self._rows(a)], mu[self._rows(b)]
            cache[key] = self.second(swapped, a, b) - (ma @ mb.T) / mu.shape[1]
        return cache[key]

    @property
    def variance(self) -> np.ndarray:
        """[C] within-position variance under I, pooled over positions."""
        if "var" not in self.memo:
            self.memo["var"] = np.clip(np.diag(self.covariance(0)), 0.0, None)
        return self.memo["var"]

    @property
    def target_variance(self) -> np.ndarray:
        """[C] within-position variance of the original network's values."""
        if "target_var" not in self.memo:
            cov = self.covariance(0, Values.ORIGINAL, Values.ORIGINAL)
            self.memo["target_var"] = np.clip(np.diag(cov), 0.0, None)
        return self.memo["target_var"]

    @property
    def positions(self) -> float:
        """Mean number of positions per sample: E||d||^2 = positions x pooled variance."""
        return self.plain.mean_positions


@dataclass
class Stats:
    """Per-cut interventional moments plus the output scale used to normalise risks."""

    cuts: dict[str, CutStats]
    out_variance: float  # E||f - E f||^2 on plain inputs (original network... under the plan)
    n: int

    def forget(self, values: Values) -> None:
        """Drops the cached covariance blocks and fold selections (analysis.fits) that read
        `values`; asked for again they are recomputed from the moments (the same numbers). A
        round that tries both fit targets holds one target's at a time (EfficientNet-Lite1:
        a [C, C] block over all cuts is 93 MB)."""
        for cs in self.cuts.values():
            for key in [k for k in cs.memo if isinstance(k, tuple) and values in k]:
                del cs.memo[key]


def token_weights(ug, cut: str, mask: np.ndarray | None, rows, positions: int
                  ) -> np.ndarray | None:  # fmt: skip
    """[rows, P] 0/1 weights of a cut's positions from the split's padding mask [n, T], or
    None (no mask, or not a cut of token or head units). A cut's P positions are its T tokens,
    each repeated over the positions within a unit (a head's Dh channels): token-major, as
    units.layout.to_ncp lays out [B, T, H*Dh]."""
    if mask is None or positions % mask.shape[1]:
        return None
    if not any(ug.units[u].kind in ("token", "head") for u in ug.cuts[cut].units):
        return None
    return np.repeat((np.asarray(mask)[rows] > 0).astype(np.float64),
                     positions // mask.shape[1], axis=1)  # fmt: skip


def collect(
    runner: Runner,
    data: dict[str, np.ndarray],
    plan: Plan | None,
    *,
    p: float = 0.5,
    seed: int = 0,
    upstream_fraction: float = 0.5,
    batch_size: int | None = None,
    progress: Progress | None = None,
    original: bool = False,
    mask: np.ndarray | None = None,
) -> Stats:
    """Moments of every site under I with `plan` applied (see module docstring).

    original: when the plan removes units, also run the original network on the same inputs
    and interventions and keep joint moments of [plan; original] values, so replacements can
    be fitted toward the original's values (CutStats.target_mean, covariance(.., "o")).
    mask: [n, T] padding mask of the split (1 = a real token): at cuts of token and head
    units, padding positions count in no moment (token_weights)."""
    original = bool(original and plan is not None and plan.removed)
    ug = runner.ug
    sites = runner.sites
    g = len(sites)
    anc = ancestors(ug, sites)
    cuts = {}
    for t in sites:
        cut = ug.cuts[t]
        pooled = cut.positions is None
        pos = 1 if pooled else cut.positions
        n_up = len(anc[t])
        ch = 2 * cut.channels if original else cut.channels
        cuts[t] = CutStats(
            t,
            Moments(ch, pos, pooled),
            Moments(ch, pos, pooled),
            w_plain=(1 + g - 1 - n_up) / (g + 1),
            w_same=1 / (g + 1),
            w_up=n_up / (g + 1),
            p=p,
            original=original,
        )
    n = len(next(iter(data.values())))
    batches = split_batches(n, batch_size or runner.batch_size)
    draws = InterventionSampler(n, p, seed)
    up = draws.subset(upstream_fraction) if g > 1 else np.zeros(n, dtype=bool)
    which = draws.sites(g)  # the one site each upstream sample is intervened on
    total = len(batches) + sum(bool(up[b].any()) for b in batches)
    done = 0
    fsum = None
    fsq = 0.0
    keep = {t: kept_mask(ug, t, plan) for t in sites}
    nets = [runner.network(plan)] + ([runner.network(None)] if original else [])

    def plain(b: slice) -> list[dict[str, np.ndarray]]:
        """The plain pass of batch b: moments, output sums; its captures (plan[, original])."""
        nonlocal fsum, fsq, done
        f, caps = nets[0].run(take(data, b), capture=True)
        f = f.reshape(f.shape[0], -1).astype(np.float64)
        fsum = f.sum(0) if fsum is None else fsum + f.sum(0)
        fsq += float(np.sum(f * f))
        base = [caps] + ([runner.original_captures(data, b)] if original else [])
        for t in sites:
            vals = np.concatenate([c[t] for c in base], axis=1)
            cuts[t].plain.add(vals, token_weights(ug, t, mask, b, vals.shape[2]))
        done += 1
        if progress:
            progress("stats", done, total)
        return base

    def upstream(b: slice, base: list[dict[str, np.ndarray]],
                 held: list[dict[str, np.ndarray]] | None) -> None:  # fmt: skip
        """The upstream interchanges of batch b's drawn samples; sources from `held` (each
        network's plain captures of the whole split) when given, else run."""
        nonlocal done
        rows = np.flatnonzero(up[b])
        if not len(rows):
            return
        idx = b.start + rows  # the upstream samples of this batch, as rows of the split
        masks = {t: draws.mask(t, keep[t], idx) & (which[idx] == k)[:, None]
                 for k, t in enumerate(sites)}  # fmt: skip
        xs, xb = take(data, draws.sources[idx]), take(data, idx)
        swapped = []
        for k, (net, c) in enumerate(zip(nets, base, strict=True)):
            if held is not None:
                src = {t: v[draws.sources[idx]] for t, v in held[k].items()}
            else:
                src = net.run(xs, capture=True)[1]
            bc = {t: v[rows] for t, v in c.items()}
            swapped.append(interchange(net, xb, bc, src, masks, capture=True)[1])
        for t in sites:
            sel = np.isin(which[idx], [sites.index(h) for h in anc[t]])
            if sel.any():
                vals = np.concatenate([c[t][sel] for c in swapped], axis=1)
                cuts[t].up.add(vals, token_weights(ug, t, mask, idx[sel], vals.shape[2]))
        done += 1
        if progress:
            progress("stats", done, total)

    # When every batch's plain captures fit in the runner's cache budget, all plain passes run
    # first and the interchange sources are rows of them (no source passes: about 1 FPE per
    # round of the 3); otherwise batch by batch with a source pass each. The moments are the
    # same sums in the same order either way (plain and upstream sums are separate).
    first = plain(batches[0])
    per_sample = sum(v.nbytes for c in first for v in c.values()) / max(batches[0].stop, 1)
    if up.any() and per_sample * n <= runner.CACHE_BYTES:
        bases = [first] + [plain(b) for b in batches[1:]]
        held = [{t: np.concatenate([bs[k][t] for bs in bases]) for t in sites}
                for k in range(len(nets))]  # fmt: skip
        del bases, first
        for b in batches:
            upstream(b, [{t: v[b] for t, v in h.items()} for h in held], held)
    else:
        upstream(batches[0], first, None)
        for b in batches[1:]:
            upstream(b, plain(b), None)
    mean_f = fsum / n
    out_var = fsq / n - float(mean_f @ mean_f)
    return Stats(cuts, max(out_var, 1e-30), n)
