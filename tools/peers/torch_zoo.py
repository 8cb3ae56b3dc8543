"""The zoo's trained torch modules, rebuilt by deterministic retraining (models.build_zoo specs).

The zoo ships ONNX only, and its export folded BatchNorm into the convolutions, so the BN
statistics and scales that Torch-Pruning's BN-scale criterion needs are not in the ONNX file.
The zoo build is deterministic (fixed seeds, deterministic algorithms, one thread), so we retrain
with the exact same spec and verify that the torch logits match the shipped ONNX model's on the
test split (max abs diff < 1e-4) before using the module; otherwise we stop with an error.
State dicts are cached in $SCMOPT_BENCH_CACHE (default ~/.cache/scmopt-bench).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FINAL_LAYER = {  # the classifier (its outputs are the logits, never pruned)
    "mlp_digits": "fc3",
    "cnn_digits": "fc2",
    "resnet_digits": "fc",
    "mobile_digits": "fc",
    "equality_mlp": "fc3",
}


def _spec(name: str):
    from models import build_zoo

    for s in build_zoo.SPECS:
        if s.name == name:
            return s
    raise KeyError(name)


def trained(name: str, cache: Path | None = None, check: bool = True):
    """The trained torch module of zoo model `name` (eval mode), verified against its ONNX."""
    import torch

    from models import model_path
    from models.export import ort_logits
    from models.train import make_deterministic, predict, train

    sys.path.insert(0, str(ROOT / "tools"))
    from benchlib import CACHE, split

    cache = Path(cache or CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    spec = _spec(name)
    path = cache / f"{name}.pt"
    if path.exists():
        model = spec.build()
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        data = spec.data()
        make_deterministic(spec.config.seed)  # as models.build_zoo.build_one: seed, then build
        model = train(spec.build(), data.train, spec.config)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        path.write_bytes(buf.getvalue())
    model.eval()
    torch.set_num_threads(1)
    if check:
        feeds, _ = split(name, "test")
        x = feeds["input"]
        diff = float(np.abs(predict(model, x) - ort_logits(onnx.load(model_path(name)), x)).max())
        if not diff < 1e-4:
            path.unlink(missing_ok=True)
            raise RuntimeError(
                f"{name}: retrained torch model differs from the zoo ONNX by {diff:.3g}; "
                "the zoo was built with another torch version or CPU"
            )
    return model


def export(model, example: np.ndarray) -> onnx.ModelProto:
    """The zoo's TorchScript export (opset 17, BN folded, dynamic batch): same tensor names."""
    import torch

    from models.export import export_torchscript

    return export_torchscript(model.eval(), torch.from_numpy(example[:2]))
