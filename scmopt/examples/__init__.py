"""Trained models and calibration data shipped with the package (copies from models/zoo).

`example:cnn_digits` on the command line names `cnn_digits.onnx` as a model argument and
`cnn_digits_calib.npz` as --data.
"""

from __future__ import annotations

from pathlib import Path

from scmopt.errors import ScmoptError

PREFIX = "example:"


def folder() -> Path:
    return Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in folder().glob("*.onnx"))


def resolve(arg: str, kind: str) -> str:
    """Maps `example:NAME` to the shipped model (kind 'model') or its data (kind 'data')."""
    if not arg.startswith(PREFIX):
        return arg
    name = arg[len(PREFIX) :]
    path = folder() / (f"{name}.onnx" if kind == "model" else f"{name}_calib.npz")
    if not path.is_file():
        raise ScmoptError(f"no shipped example {name!r} (examples: {', '.join(names())})")
    return str(path)
