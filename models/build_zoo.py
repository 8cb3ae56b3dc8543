"""Train, export, verify and write the reference zoo: ``python -m models.build_zoo``.

``--transformers`` (or ``--models NAME ...``) builds only those models and merges their entries
into the existing manifest, leaving every other file in the output directory untouched.
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

from . import MANIFEST, load_manifest, majority_task, zoo_dir
from . import architectures as arch
from . import datasets as ds
from .export import (
    INPUT_NAME,
    TORCHSCRIPT_OPSET,
    check_against_torch,
    export_dynamo,
    export_torchscript,
    ort_logits,
)
from .train import TrainConfig, accuracy, make_deterministic, predict, train

MIN_ACCURACY = 0.95
VIT_EPOCHS = 100
TEXT_EPOCHS = 8
TRANSFORMER_OPSET_DYNAMO = 18


@dataclass(frozen=True)
class Export:
    """One ONNX file of a trained network: ``<name><suffix>.onnx``."""

    suffix: str  # "" for the base model
    exporter: str  # "torchscript" or "dynamo"
    opset: int | None = None  # None: the exporter's default


@dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[], nn.Module]
    data: Callable[[], ds.Dataset]
    config: TrainConfig
    task: str
    description: str
    dynamo: bool = False  # also export a ``<name>_dynamo.onnx`` variant (default opset)
    exports: tuple[Export, ...] | None = None  # overrides the torchscript(17) [+ dynamo] pair
    input_names: tuple[str, ...] | None = None  # None: the single float input ``input``
    seq_axis: bool = False  # axis 1 of every input is dynamic too (``seq``, up to max_seq)
    max_seq: int | None = None
    transformer: bool = False  # built by ``--transformers``
    min_accuracy: float = MIN_ACCURACY

    def variants(self) -> tuple[Export, ...]:
        if self.exports is not None:
            return self.exports
        base = (Export("", "torchscript", TORCHSCRIPT_OPSET),)
        return base + ((Export("_dynamo", "dynamo"),) if self.dynamo else ())


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
    Spec(
        "vit_digits",
        arch.ViTDigits,
        lambda: ds.digits(image=True),
        TrainConfig(epochs=VIT_EPOCHS, lr=2e-3, seed=6, clip=1.0),
        "digits",
        "ViT: Conv 2x2/2 patch embedding 1->64 (16 tokens), class token Concat, learned position "
        "embedding, 4 pre-norm encoder layers (4 heads x 16, q/k/v/out Linear, explicit softmax "
        "attention, FFN 64-128-64 GELU, LayerNorm), LayerNorm, class-token Linear 10",
        exports=(
            Export("", "torchscript", TORCHSCRIPT_OPSET),
            Export("_dynamo", "dynamo", TRANSFORMER_OPSET_DYNAMO),
        ),
        transformer=True,
    ),
    Spec(
        "text_encoder",
        lambda: arch.TextEncoder(majority_task.VOCAB_SIZE, majority_task.SEQ_LEN),
        ds.majority,
        TrainConfig(epochs=TEXT_EPOCHS, lr=1e-3, seed=7, clip=1.0),
        "hierarchical_majority",
        f"BERT-style: token ({majority_task.VOCAB_SIZE}) + position ({majority_task.SEQ_LEN}) "
        "embeddings 64, LayerNorm, additive padding mask, 4 post-norm encoder layers (4 heads "
        "x 16, FFN 64-128-64 GELU), [CLS] tanh pooler 64, Linear 2; label (majority of "
        "segment 1 == majority of segment 2) (models.majority_task)",
        exports=(
            Export("", "torchscript", TORCHSCRIPT_OPSET),
            Export("_opset14", "torchscript", 14),
            Export("_dynamo", "dynamo", TRANSFORMER_OPSET_DYNAMO),
        ),
        input_names=majority_task.INPUT_NAMES,
        seq_axis=True,
        max_seq=majority_task.SEQ_LEN,
        transformer=True,
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
    assert data.y.dtype == np.int64
    if isinstance(data.x, dict):  # token models: int64 arrays keyed by input name
        assert all(v.dtype == np.int64 for v in data.x.values()) and "y" not in data.x
        save_npz(out / fname, {**data.x, "y": data.y})
    else:
        assert data.x.dtype == np.float32
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
    if acc < spec.min_accuracy:
        raise AssertionError(f"{name}: onnxruntime test accuracy {acc:.4f} < {spec.min_accuracy}")
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


def _example(x: np.ndarray | dict[str, np.ndarray]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    if isinstance(x, dict):
        return tuple(torch.from_numpy(v[:2]) for v in x.values())
    return torch.from_numpy(x[:2])


def _export(spec: Spec, variant: Export, model: nn.Module, example, tmp: Path) -> onnx.ModelProto:
    kw = {"input_names": spec.input_names, "seq_axis": spec.seq_axis}
    if variant.exporter == "torchscript":
        return export_torchscript(model, example, opset=variant.opset or TORCHSCRIPT_OPSET, **kw)
    if spec.input_names is None and not spec.seq_axis and variant.opset is None:
        return export_dynamo(model, example, tmp)  # the CNN/MLP zoo's call, unchanged
    return export_dynamo(model, example, tmp, opset=variant.opset, max_seq=spec.max_seq, **kw)


def _short(x: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[:, :length]) for k, v in x.items()}


def build_one(spec: Spec, out: Path, tmp: Path, log=print) -> list[dict]:
    t0 = time.perf_counter()
    data = spec.data()
    make_deterministic(spec.config.seed)
    model = train(spec.build(), data.train, spec.config)
    t_train = time.perf_counter() - t0
    torch_logits = predict(model, data.test.x)
    torch_acc = accuracy(torch_logits, data.test.y)
    example = _example(data.test.x)
    splits = {s: _write_split(out, spec.name, s, getattr(data, s)) for s in ("calib", "test")}

    variants = [
        (v.exporter, spec.name + v.suffix, _export(spec, v, model, example, tmp))
        for v in spec.variants()
    ]
    entries = []
    for exporter, name, proto in variants:
        diff = check_against_torch(proto, torch_logits, data.test.x)
        one = data.test.head(1).x
        check_against_torch(proto, torch_logits[:1], one)  # batch 1 works too
        if spec.seq_axis:  # and a shorter sequence (dynamic axis 1)
            short = _short(data.test.head(64).x, 16)
            check_against_torch(proto, predict(model, short), short)
        entry = _entry(out, name, proto, spec, exporter, splits, data.test)
        entries.append(entry)
        log(
            f"{name:22s} {exporter:11s} torch acc {torch_acc:.4f} ort acc "
            f"{entry['test_accuracy']:.4f} max|ort-torch| {diff:.2e} params {entry['params']} "
            f"flops {entry['flops']} (train {t_train:.1f}s, {time.perf_counter() - t0:.1f}s)"
        )
    return entries


def _spec_index(entry: dict) -> int:
    names = [s.name for s in SPECS]
    base = entry.get("variant_of") or entry["name"]
    return names.index(base) if base in names else len(names)


def build(out: Path, names: list[str] | None = None, log=print) -> list[dict]:
    """Build the named specs (all when None) into ``out`` and write the manifest.

    With ``names``, the entries of the other models already in ``out``'s manifest are kept as
    they are (their files are not touched); the manifest lists them in SPECS order.
    """
    out.mkdir(parents=True, exist_ok=True)
    specs = [s for s in SPECS if names is None or s.name in names]
    if names is not None and len(specs) != len(set(names)):
        known = sorted({s.name for s in SPECS})
        raise SystemExit(f"unknown model in {names}; known: {known}")
    entries: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            entries += build_one(spec, out, Path(tmp), log)
    if names is not None and (out / MANIFEST).exists():
        built = {s.name for s in specs}
        kept = [e for e in load_manifest(out) if (e.get("variant_of") or e["name"]) not in built]
        entries = sorted(kept + entries, key=_spec_index)  # stable: variants stay in order
    (out / MANIFEST).write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=zoo_dir(), help="output directory")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--transformers",
        action="store_true",
        help="only the transformer models (vit_digits, text_encoder); keep the other entries",
    )
    which.add_argument(
        "--models", nargs="+", metavar="NAME", help="only these models; keep the other entries"
    )
    args = parser.parse_args(argv)
    names = args.models
    if args.transformers:
        names = [s.name for s in SPECS if s.transformer]
    t0 = time.perf_counter()
    built = build(args.out, names)
    entries = [e for e in built if names is None or (e.get("variant_of") or e["name"]) in names]
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
