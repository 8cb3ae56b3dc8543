"""Torch definitions of the reference zoo models (small, CPU-trainable in seconds)."""

from __future__ import annotations

import math

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
    "SelfAttention",
    "EncoderLayer",
    "ViTDigits",
    "TextEncoder",
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


class SelfAttention(nn.Module):
    """Multi-head self-attention written out plainly (no SDPA), so exports show every step.

    q, k, v, out: separate ``nn.Linear``; heads split with ``view(B, T, H, Dh).transpose(1, 2)``
    and merged with ``transpose(1, 2).reshape(B, T, H * Dh)``; scores ``q @ k^T / sqrt(Dh)``
    (plus an additive mask [B, 1, 1, T] when given), softmax over keys, ``@ v``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        assert dim % heads == 0
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        h, dh = self.heads, self.head_dim
        q = self.q(x).view(b, t, h, dh).transpose(1, 2)
        k = self.k(x).view(b, t, h, dh).transpose(1, 2)
        v = self.v(x).view(b, t, h, dh).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
        if mask is not None:
            scores = scores + mask
        ctx = torch.softmax(scores, dim=-1) @ v
        return self.out(ctx.transpose(1, 2).reshape(b, t, h * dh))


class EncoderLayer(nn.Module):
    """Attention + FFN (Linear-GELU-Linear) with residuals and LayerNorm.

    ``pre_norm`` (ViT): x + attn(LN(x)), x + ffn(LN(x)). Otherwise post-norm (BERT):
    LN(x + attn(x)), LN(x + ffn(x)).
    """

    def __init__(self, dim: int, heads: int, ffn: int, pre_norm: bool) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = SelfAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x), mask)
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.ffn(x))


class ViTDigits(nn.Module):
    """Small pre-norm ViT on the 8x8 digits. Input [N, 1, 8, 8].

    Patch embedding Conv(1 -> dim, 2x2, stride 2) -> flatten(2).transpose(1, 2): 16 tokens;
    class token (expanded to the batch) concatenated in front, learned position embedding added;
    ``layers`` pre-norm encoder layers; final LayerNorm; Linear head on the class token.
    """

    def __init__(
        self, dim: int = 64, heads: int = 4, layers: int = 4, ffn: int = 128, patch: int = 2
    ) -> None:
        super().__init__()
        tokens = (8 // patch) ** 2
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn, True) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # [N, tokens, dim]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x)[:, 0])


class TextEncoder(nn.Module):
    """Small post-norm BERT-style encoder. Inputs input_ids, attention_mask: int64 [N, T].

    Learned token and position embeddings (position ids sliced from a buffer to the run-time
    length T <= ``max_len``), embedding LayerNorm; the padding mask enters every layer's scores
    as ``(1 - mask)[:, None, None, :] * -10000``; ``layers`` post-norm encoder layers; the
    [CLS] (position 0) state -> Linear -> tanh pooler -> Linear classifier.
    """

    def __init__(
        self,
        vocab: int,
        max_len: int,
        classes: int = 2,
        dim: int = 64,
        heads: int = 4,
        layers: int = 4,
        ffn: int = 128,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.register_buffer("position_ids", torch.arange(max_len)[None], persistent=False)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn, False) for _ in range(layers))
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(self.position_ids[:, :t])
        x = self.norm(x)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))
