"""Torch definitions of the reference zoo models (small, CPU-trainable in seconds)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MLPDigits",
    "CNNDigits",
    "BasicBlock",
    "ResNetDigits",
    "SqueezeExcite",
    "InvertedResidual",
    "MobileDigits",
    "EqualityMLP",
]


class MLPDigits(nn.Module):
    """64 -> 128 -> 64 -> 10, ReLU. Input [N, 64]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNNDigits(nn.Module):
    """Two Conv-BN-ReLU-MaxPool stages, Flatten -> Linear(64) -> ReLU -> Linear(10). [N,1,8,8]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(64 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU after the add; 1x1 conv+BN projection."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetDigits(nn.Module):
    """8x8 digits upsampled (bilinear) to 32x32 and replicated to 3 channels inside the model.

    Stem conv 3->16, BasicBlocks of widths 16, 32 (stride 2), 64 (stride 2), GAP, Linear -> 10.
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU()
        )
        self.layer1 = BasicBlock(w1, w1, 1)
        self.layer2 = BasicBlock(w1, w2, 2)
        self.layer3 = BasicBlock(w2, w3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = x.repeat(1, 3, 1, 1)
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class SqueezeExcite(nn.Module):
    """GAP -> 1x1 conv -> ReLU -> 1x1 conv -> Hardsigmoid, multiplied back onto the channels."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))
        return x * s


class InvertedResidual(nn.Module):
    """MobileNetV3-style block: [1x1 expand-BN-HS] -> dw3x3-BN-HS -> [SE] -> 1x1 project-BN.

    Without expansion (``expand == cin``) it is a depthwise-separable block. Residual add when
    stride 1 and cin == cout.
    """

    def __init__(
        self, cin: int, expand: int, cout: int, stride: int = 1, se: int | None = None
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expand != cin:
            layers += [
                nn.Conv2d(cin, expand, 1, bias=False),
                nn.BatchNorm2d(expand),
                nn.Hardswish(),
            ]
        layers += [
            nn.Conv2d(expand, expand, 3, stride=stride, padding=1, groups=expand, bias=False),
            nn.BatchNorm2d(expand),
            nn.Hardswish(),
        ]
        if se is not None:
            layers.append(SqueezeExcite(expand, se))
        layers += [nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileDigits(nn.Module):
    """Stem conv 1->16 (8x8), three inverted-residual blocks (two with SE), 1x1 head, GAP, Linear.

    Blocks: dw-separable 16->16 with SE (residual); expand 16->48, dw stride 2, SE, -> 24 (4x4);
    expand 24->72, dw, -> 24 (residual). Head 1x1 24->96, Hardswish, GAP, Linear 96 -> 10.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 16, 1, se=8),
            InvertedResidual(16, 48, 24, 2, se=16),
            InvertedResidual(24, 72, 24, 1),
        )
        self.head = nn.Sequential(
            nn.Conv2d(24, 96, 1, bias=False), nn.BatchNorm2d(96), nn.Hardswish()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class EqualityMLP(nn.Module):
    """16 -> 64 -> 64 -> 2 logits, ReLU; input concat(a, b, c, d)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
