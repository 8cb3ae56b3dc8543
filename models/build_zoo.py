"""Train, export, verify and write the reference zoo: ``python -m models.build_zoo``.

Deterministic (fixed seeds, deterministic algorithms, one thread, metadata stripped, fixed zip
timestamps): rebuilding on the same machine and library versions gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from scmopt.ops.cost import count_flops, count_params

from . import MANIFEST, zoo_dir
from . import architectures as arch
from . import datasets as ds
from .export import (
    INPUT_NAME,
    check_against_torch,
    export_dynamo,
    export_torchscript,
    ort_logits,
)
from .train import TrainConfig, accuracy, make_deterministic, predict, train

MIN_ACCURACY = 0.95


@dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[], nn.Module]
    data: Callable[[], ds.Dataset]
    config: TrainConfig
    task: str
    description: str
    dynamo: bool = False  # also export a ``<name>_dynamo.onnx`` variant


SPECS = [
    Spec(
        "mlp_digits",
        arch.MLPDigits,
        lambda: ds.digits(image=False),
        TrainConfig(epochs=40, seed=1),
        "digits",
        "MLP 64-128-64-10, ReLU",
        dynamo=True,
    ),
    Spec(
        "cnn_digits",
        arch.CNNDigits,
        lambda: ds.digits(image=True),
        TrainConfig(epochs=30, seed=2),
        "digits",
        "2x (Conv3x3-BN-ReLU-MaxPool2) 32, 64 ch, Flatten, Gemm 256-64, ReLU, Gemm 64-10",
        dynamo=True,
    ),
    Spec(
        "resnet_digits",
        arch.ResNetDigits,
        lambda: ds.digits(image=True),
        TrainConfig(epochs=20, seed=3),
        "digits",
        "bilinear 8->32 upsample, 1->3 ch Tile, stem conv 16, BasicBlocks 16/32s2/64s2 "
        "(1x1 projection shortcuts), GAP, Linear 10",
    ),
    Spec(
        "mobile_digits",
        arch.MobileDigits,
        lambda: ds.digits(image=True),
        TrainConfig(epochs=40, seed=4),
        "digits",
        "stem conv 16, inverted residual / depthwise-separable blocks with squeeze-excite "
        "(Hardsigmoid gate), Hardswish, 1x1 head 96, GAP, Linear 10",
    ),
    Spec(
        "equality_mlp",
        arch.EqualityMLP,
        ds.equality,
        TrainConfig(epochs=30, batch_size=128, seed=5),
        "hierarchical_equality",
        "MLP 16-64-64-2 on concat(a,b,c,d); label (a==b)==(c==d) (models.equality_task)",
    ),
]

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]))


def _io(values) -> list[dict]:
    out = []
    for v in values:
        tt = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        out.append({"name": v.name, "dtype": dtype, "shape": shape})
    return out


def _write_split(out: Path, name: str, split: str, data: ds.Split) -> tuple[str, str]:
    fname = f"{name}_{split}.npz"
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64
    save_npz(out / fname, {INPUT_NAME: data.x, "y": data.y})
    return fname, sha256(out / fname)


def _entry(
    out: Path,
    name: str,
    model: onnx.ModelProto,
    spec: Spec,
    exporter: str,
    splits: dict[str, tuple[str, str]],
    test: ds.Split,
) -> dict:
    fname = f"{name}.onnx"
    (out / fname).write_bytes(model.SerializeToString())
    reloaded = onnx.load(out / fname)
    onnx.checker.check_model(reloaded, full_check=True)
    acc = accuracy(ort_logits(reloaded, test.x), test.y)
    if acc < MIN_ACCURACY:
        raise AssertionError(f"{name}: onnxruntime test accuracy {acc:.4f} < {MIN_ACCURACY}")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "name": name,
        "file": fname,
        "sha256": sha256(out / fname),
        "calib": splits["calib"][0],
        "calib_sha256": splits["calib"][1],
        "test": splits["test"][0],
        "test_sha256": splits["test"][1],
        "params": count_params(model),
        "flops": count_flops(model),
        "test_accuracy": acc,
        "exporter": exporter,
        "opset": opset,
        "inputs": _io(model.graph.input),
        "outputs": _io(model.graph.output),
        "task": spec.task,
        "description": spec.description,
        "variant_of": spec.name if name != spec.name else None,
    }


def build_one(spec: Spec, out: Path, tmp: Path, log=print) -> list[dict]:
    t0 = time.perf_counter()
    data = spec.data()
    make_deterministic(spec.config.seed)
    model = train(spec.build(), data.train, spec.config)
    torch_logits = predict(model, data.test.x)
    torch_acc = accuracy(torch_logits, data.test.y)
    example = torch.from_numpy(data.test.x[:2])
    splits = {s: _write_split(out, spec.name, s, getattr(data, s)) for s in ("calib", "test")}

    variants = [("torchscript", spec.name, export_torchscript(model, example))]
    if spec.dynamo:
        variants.append(("dynamo", f"{spec.name}_dynamo", export_dynamo(model, example, tmp)))
    entries = []
    for exporter, name, proto in variants:
        diff = check_against_torch(proto, torch_logits, data.test.x)
        check_against_torch(proto, torch_logits[:1], data.test.x[:1])  # batch 1 works too
        entry = _entry(out, name, proto, spec, exporter, splits, data.test)
        entries.append(entry)
        log(
            f"{name:22s} {exporter:11s} torch acc {torch_acc:.4f} ort acc "
            f"{entry['test_accuracy']:.4f} max|ort-torch| {diff:.2e} params {entry['params']} "
            f"flops {entry['flops']} ({time.perf_counter() - t0:.1f}s)"
        )
    return entries


def build(out: Path, names: list[str] | None = None, log=print) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    specs = [s for s in SPECS if names is None or s.name in names]
    entries: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            entries += build_one(spec, out, Path(tmp), log)
    (out / MANIFEST).write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=zoo_dir(), help="output directory")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    entries = build(args.out)
    size = sum((args.out / e["file"]).stat().st_size for e in entries)
    size += sum(
        (args.out / f).stat().st_size for f in {e[k] for e in entries for k in ("calib", "test")}
    )
    print(
        f"wrote {len(entries)} models to {args.out} ({size / 1e6:.2f} MB) in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
