"""What "the compressed model agrees with the original" means for one output (issue 13).

A `Metric` scores each sample in [0, 1] (1 = agrees): top-1 fidelity, IIA, the stopping rules,
the confidence bounds and `validate` all average these scores, so one choice changes them all
together. Specs (`--metric`, API `metric=`):

- `top1`: argmax over the whole output equal (class logits [B, K]);
- `topk[:K]`: the candidate's top-1 is among the reference's top K (default 5);
- `token-top1`: per position argmax over the last axis, [B, T, K] (token classifiers, CTC
  recognisers); a sample scores the fraction of its positions that agree, counting only the
  real tokens when the data has a [B, T] padding mask over the same T (io.data.padding_mask);
- `cosine`: cosine similarity of the flattened outputs, clipped at 0 (embeddings); reports
  also give the 5th percentile of the per-sample scores;
- `rel-mse`: 1 - ||f - f~||^2 / ||f||^2, clipped at 0 (regression, dense maps);
- `within:N`: top-1 bins at most N apart (ordinal bins, e.g. pitch);
- `detection[:CONF]`: [B, A, N] or [B, N, A] heads with N = 4 box values (cx, cy, w, h) then
  class scores: the Jaccard index of the confident anchors (max class score >= CONF, default
  0.25) matched in class and box (IoU >= 0.5) over the anchors confident in either.

`choose(shape)` picks the default from the output's per-sample shape, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scmopt.errors import ScmoptError

Score = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A per-sample agreement score. `shape`: the per-sample output shape the flattened
    [n, K] outputs are viewed as (None: as given); `binary`: every score is 0 or 1."""

    name: str
    score: Score
    arg: float = 0.0
    binary: bool = True
    shape: tuple[int, ...] | None = None
    # the line saying which metric and why, once resolved for a model (scmopt.api)
    note: str = field(default="", compare=False)

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.arg:g}" if self.name in _ARGS else self.name

    def bind(self, shape: tuple[int, ...]) -> Metric:
        """The same metric on outputs of per-sample shape `shape` (checked)."""
        _check_shape(self.name, tuple(shape))
        return Metric(self.name, self.score, self.arg, self.binary, tuple(int(d) for d in shape))

    def __call__(self, reference: np.ndarray, candidate: np.ndarray,
                 positions: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """[n] scores of `candidate` against `reference` (arrays [n, ...]). `positions`: [n, T]
        weights of the token positions (a padding mask), used by token-top1 when T matches."""
        ref, cand = np.asarray(reference), np.asarray(candidate)
        if self.shape is not None:
            ref = ref.reshape((len(ref), *self.shape))
            cand = cand.reshape((len(cand), *self.shape))
        if not len(ref):
            return np.zeros(0)
        if positions is not None and self.name == "token-top1":  # the one positional metric
            scores = self.score(ref, cand, self.arg, np.asarray(positions, np.float64))
        else:
            scores = self.score(ref, cand, self.arg)
        return np.clip(scores, 0.0, 1.0).astype(np.float64)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def _top1(ref: np.ndarray, cand: np.ndarray, _: float) -> np.ndarray:
    return (_flat(ref).argmax(1) == _flat(cand).argmax(1)).astype(np.float64)


def _topk(ref: np.ndarray, cand: np.ndarray, k: float) -> np.ndarray:
    r = _flat(ref)
    top = np.argsort(-r, axis=1, kind="stable")[:, : max(1, int(k))]
    return (top == _flat(cand).argmax(1)[:, None]).any(1).astype(np.float64)


def _within(ref: np.ndarray, cand: np.ndarray, bins: float) -> np.ndarray:
    gap = np.abs(_flat(ref).argmax(1) - _flat(cand).argmax(1))
    return (gap <= bins).astype(np.float64)


def _token_top1(ref: np.ndarray, cand: np.ndarray, _: float,
                positions: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    r = ref.reshape(len(ref), -1, ref.shape[-1])
    c = cand.reshape(len(cand), -1, cand.shape[-1])
    same = (r.argmax(-1) == c.argmax(-1)).astype(np.float64)
    if positions is None or positions.shape != same.shape:  # another T (a [CLS] added): all
        return same.mean(1)
    real = positions.sum(1)
    # a sample without real tokens has nothing to disagree on
    return np.where(real > 0, (same * positions).sum(1) / np.maximum(real, 1e-30), 1.0)


def _cosine(ref: np.ndarray, cand: np.ndarray, _: float) -> np.ndarray:
    r, c = _flat(ref), _flat(cand)
    norm = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    dot = np.sum(r * c, axis=1)
    both_zero = (np.linalg.norm(r, axis=1) == 0) & (np.linalg.norm(c, axis=1) == 0)
    return np.where(both_zero, 1.0, dot / np.maximum(norm, 1e-30))


def _rel_mse(ref: np.ndarray, cand: np.ndarray, _: float) -> np.ndarray:
    r, c = _flat(ref), _flat(cand)
    energy = np.sum(r**2, axis=1)
    err = np.sum((r - c) ** 2, axis=1)
    return np.where(energy > 0, 1.0 - err / np.maximum(energy, 1e-30), (err == 0).astype(float))


def _anchors_last(a: np.ndarray) -> np.ndarray:
    """[n, A, N] view of a detection head ([n, N, A] when the attribute axis comes first)."""
    a = a.reshape(len(a), a.shape[1], -1) if a.ndim != 3 else a
    return np.swapaxes(a, 1, 2) if a.shape[1] < a.shape[2] else a


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (cx, cy, w, h) boxes, elementwise over the leading axes."""
    lo = np.maximum(a[..., :2] - a[..., 2:4] / 2, b[..., :2] - b[..., 2:4] / 2)
    hi = np.minimum(a[..., :2] + a[..., 2:4] / 2, b[..., :2] + b[..., 2:4] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = np.abs(np.prod(a[..., 2:4], -1)) + np.abs(np.prod(b[..., 2:4], -1)) - inter
    return inter / np.maximum(union, 1e-30)


def _detection(ref: np.ndarray, cand: np.ndarray, conf: float) -> np.ndarray:
    r, c = _anchors_last(ref), _anchors_last(cand)
    r_conf, c_conf = r[..., 4:].max(-1) >= conf, c[..., 4:].max(-1) >= conf
    same = (r[..., 4:].argmax(-1) == c[..., 4:].argmax(-1)) & (_iou(r, c) >= 0.5)
    matched = np.sum(r_conf & c_conf & same, axis=1)
    either = np.sum(r_conf | c_conf, axis=1)
    return np.where(either > 0, matched / np.maximum(either, 1), 1.0)


# name -> (score, default argument, binary scores)
_TABLE: dict[str, tuple[Score, float, bool]] = {
    "top1": (_top1, 0.0, True),
    "topk": (_topk, 5.0, True),
    "token-top1": (_token_top1, 0.0, False),
    "cosine": (_cosine, 0.0, False),
    "rel-mse": (_rel_mse, 0.0, False),
    "within": (_within, 1.0, True),
    "detection": (_detection, 0.25, False),
}
_ARGS = ("topk", "within", "detection")  # the metrics that take an argument
NAMES = ("top1", "topk[:K]", "token-top1", "cosine", "rel-mse", "within:N", "detection[:CONF]")


def parse(spec: str | Metric) -> Metric:
    """The metric a `--metric` spec names (ScmoptError naming the flag when it is unknown)."""
    if isinstance(spec, Metric):
        return spec
    name, _, arg = str(spec).strip().lower().partition(":")
    if name not in _TABLE:
        raise ScmoptError(f"--metric {spec!r}: unknown metric (choose from {', '.join(NAMES)})")
    score, default, binary = _TABLE[name]
    if name not in _ARGS and arg:
        raise ScmoptError(f"--metric {spec!r}: {name} takes no argument")
    try:
        value = float(arg) if arg else default
    except ValueError:
        raise ScmoptError(f"--metric {spec!r}: {arg!r} is not a number") from None
    if name in ("topk", "within") and (value != int(value) or value < (1 if name == "topk" else 0)):
        raise ScmoptError(f"--metric {spec!r}: {name} needs a whole number"
                          f"{' >= 1' if name == 'topk' else ' >= 0'}")  # fmt: skip
    if name == "detection" and not 0 < value < 1:
        raise ScmoptError(f"--metric {spec!r}: the confidence threshold must be in (0, 1)")
    return Metric(name, score, value, binary)


def _check_shape(name: str, shape: tuple[int, ...]) -> None:
    if name == "token-top1" and len(shape) < 2:
        raise ScmoptError(f"--metric token-top1 needs a [B, T, K] output, not [B, {_dims(shape)}]")
    if name == "detection" and (len(shape) != 2 or min(shape) < 5):
        raise ScmoptError(f"--metric detection needs a [B, A, 4 + classes] output, not "
                          f"[B, {_dims(shape)}]")  # fmt: skip


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape)


TOP1 = parse("top1")


def choose(shape: tuple[int, ...]) -> tuple[Metric, str]:
    """The default metric for an output of per-sample shape `shape`, and why."""
    shape = tuple(int(d) for d in shape)
    dims = f"[B, {_dims(shape)}]" if shape else "[B]"
    k = int(np.prod(shape)) if shape else 1
    if len(shape) == 2 and max(shape) >= 1000 and min(shape) in range(5, 400):
        why = f"{dims} looks like a detection head (anchors x (4 box values + class scores))"
        return parse("detection").bind(shape), why
    if len(shape) == 2 and shape[-1] >= 2:
        why = f"{dims} is one score vector per position: per-position top-1 agreement"
        return parse("token-top1").bind(shape), why
    if len(shape) <= 1 and k >= 2:
        return TOP1.bind(shape), f"{dims} looks like class logits: top-1 agreement"
    if k == 1:
        return parse("rel-mse").bind(shape), f"{dims} is one value per sample: relative error"
    return parse("rel-mse").bind(shape), f"{dims} is a dense map: relative squared error"
