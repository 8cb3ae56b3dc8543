"""Reference model zoo for scmopt (ONNX files + calibration/test data in ``models/zoo``).

Loading the zoo needs only the standard library and numpy; building it (``python -m
models.build_zoo``) needs torch and scikit-learn (``pip install -e .[models]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["zoo_dir", "load_manifest", "get_entry", "model_path", "load_split"]

MANIFEST = "manifest.json"


def zoo_dir() -> Path:
    """Directory holding the zoo's .onnx/.npz files and manifest.json."""
    return Path(__file__).resolve().parent / "zoo"


def load_manifest(directory: str | Path | None = None) -> list[dict[str, Any]]:
    """The manifest: one dict per model (name, file, sha256, calib, test, params, flops, ...)."""
    path = Path(directory or zoo_dir()) / MANIFEST
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def get_entry(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The manifest entry of the model called ``name``."""
    for entry in load_manifest(directory):
        if entry["name"] == name:
            return entry
    raise KeyError(f"no model {name!r} in the zoo manifest")


def model_path(name: str, directory: str | Path | None = None) -> Path:
    """Path of the model's .onnx file."""
    return Path(directory or zoo_dir()) / get_entry(name, directory)["file"]


def load_split(name: str, split: str = "calib", directory: str | Path | None = None):
    """Arrays of the model's ``calib`` or ``test`` npz as a dict (input name -> array, ``y``)."""
    import numpy as np

    if split not in ("calib", "test"):
        raise ValueError(f"split must be 'calib' or 'test', not {split!r}")
    path = Path(directory or zoo_dir()) / get_entry(name, directory)[split]
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
