"""Checks `compress` makes before any work: writable outputs, a model onnxruntime can run,
enough held-out data."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from scmopt.errors import ScmoptError

HOLDOUT = 0.2  # api.compress's held-out fraction
MIN_HELD_OUT = 10  # fewer: one held-out disagreement moves fidelity by more than 0.1


def writable(path: str, flag: str) -> None:
    """Fails now, not after the run, when `path` cannot be created (probes its folder)."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise ScmoptError(f"{flag} {path}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{Path(path).name}.", dir=folder)
    except OSError as exc:
        raise ScmoptError(f"{flag} {path}: cannot write in {folder} ({exc.strerror})") from exc
    os.close(fd)
    os.unlink(probe)


def held_out(n: int, samples: int | None, min_fidelity: float | None) -> list[str]:
    """Refuses data too small for the held-out check; a warning when the split cannot resolve
    the --min-fidelity rule (one disagreement moves fidelity by more than the rule allows)."""
    n_val = max(int(round(HOLDOUT * n)), 4)
    if n_val < MIN_HELD_OUT:
        need = next(m for m in range(n, 10**6) if round(HOLDOUT * m) >= MIN_HELD_OUT)
        src = f"--samples {samples}" if samples is not None else f"--data with {n} samples"
        raise ScmoptError(
            f"{src} leaves {n_val} held-out samples ({HOLDOUT:.0%}): fidelity, IIA and the "
            f"compile check are measured on them and need at least {MIN_HELD_OUT} (with fewer, "
            f"one disagreement moves fidelity by more than 0.1); give {need} or more samples"
        )
    f = min_fidelity
    if f is not None and f < 1 and 1 / n_val > 1 - f:
        need = next(m for m in range(n, 10**8) if round(HOLDOUT * m) >= 1 / (1 - f) - 1e-9)
        return [f"held-out n={n_val}: one disagreement moves fidelity by {1 / n_val:.3f}, more "
                f"than --min-fidelity {f:g} allows; {need} or more samples resolve it"]  # fmt: skip
    return []


def runnable(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """One sample through onnxruntime, so an op it cannot run fails now (naming the op and
    its domain), not in the middle of the search."""
    import onnxruntime as ort

    from scmopt.runtime.sessions import session

    try:
        session(model, device="cpu").run(None, {k: v[:1] for k, v in feeds.items()})
    except ScmoptError:
        raise
    except Exception as exc:  # onnxruntime raises several types
        raise ScmoptError(f"onnxruntime {ort.__version__} {_ort_problem(model, exc)}") from exc


def _ort_problem(model: onnx.ModelProto, exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'", text)
    if found:
        op, opset, name = found.groups()
        nodes = [n for n in model.graph.node if n.op_type == op]
        node = next((n for n in nodes if n.name == name), nodes[0] if nodes else None)
        domain = (node.domain if node is not None else "") or "ai.onnx"
        return (f"has no CPU kernel for op {op} (domain {domain}, opset {opset}) with the input "
                f"types of node {name!r}")  # fmt: skip
    found = re.search(r"([\w.]*):(\w+)\((-?\d+)\) is not a registered function/op", text)
    if found:
        return (f"does not know op {found[2]} of domain {found[1] or 'ai.onnx'!r} (a custom op: "
                "export the model without it)")  # fmt: skip
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot run the model: {first[:300]}"
