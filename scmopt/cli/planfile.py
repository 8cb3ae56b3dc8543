"""OUT.plan.json: the search's result, saved as soon as the search ends, for `--plan`.

A plan file is a Plan's JSON (scmopt.plan, readable with Plan.from_json) plus, under
"scmopt", the settings the search ran with, digests of the model and data, and what the report
needs from the search (trajectory, metrics, scores, timing).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from scmopt import __version__
from scmopt.errors import ScmoptError

SEARCH_KEYS = ("trajectory", "metrics", "scores", "timing")


def path_for(out_path: str) -> Path:
    """OUT.plan.json beside OUT (small.onnx -> small.plan.json)."""
    p = Path(out_path)
    return p.with_name((p.stem if p.suffix == ".onnx" else p.name) + ".plan.json")


def save(found: Any, path: Path, settings: dict[str, Any]) -> None:
    """Writes the SearchResult `found` and `settings` atomically (temp file + rename)."""
    doc = {**found.plan.to_dict(), "scmopt": {
        "version": __version__, "settings": settings,
        "search": {k: getattr(found, k) for k in SEARCH_KEYS}}}  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(doc, default=_plain))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _plain(x: Any) -> Any:
    """numpy scalars as Python numbers (JSON)."""
    return x.item() if hasattr(x, "item") else str(x)


def load(path: str) -> tuple[Any, dict[str, Any]]:
    """(SearchResult, the settings it was searched with) from a plan file or a bare plan."""
    from scmopt.analysis.search import SearchResult
    from scmopt.plan import Plan

    try:
        doc = json.loads(Path(path).read_text())
        plan = Plan.from_dict(doc)
        meta = doc.get("scmopt", {})
        search = {k: v for k, v in meta.get("search", {}).items() if k in SEARCH_KEYS}
        return SearchResult(plan, **search), dict(meta.get("settings", {}))
    except FileNotFoundError as exc:
        raise ScmoptError(f"--plan {path}: no such file") from exc
    except ScmoptError as exc:
        raise ScmoptError(f"--plan {path}: {exc}") from exc
    except Exception as exc:  # malformed JSON or entries
        raise ScmoptError(f"--plan {path}: not a plan file ({type(exc).__name__})") from exc


def digest(
    feeds: dict[str, np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    model: onnx.ModelProto | None = None,
) -> str:
    """SHA-1 of a model or of calibration arrays: tells whether --plan runs on the same ones."""
    h = hashlib.sha1()
    if model is not None:
        try:
            h.update(model.SerializeToString(deterministic=True))
        except Exception:  # over protobuf's 2 GB: not compared
            h.update(b"<large model>")
    arrays = sorted((feeds or {}).items()) + ([("y", labels)] if labels is not None else [])
    for k, v in arrays:
        h.update(f"{k}:{v.dtype.str}:{v.shape}".encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()
