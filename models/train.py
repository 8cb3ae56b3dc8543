"""Deterministic, single-threaded training loop shared by all zoo models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .datasets import Split

__all__ = ["TrainConfig", "make_deterministic", "train", "predict", "accuracy"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0
    clip: float | None = None  # gradient-norm clipping (the transformers)


def make_deterministic(seed: int) -> None:
    """Fix every source of nondeterminism we control: seeds, algorithms, one thread."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def train(model: nn.Module, data: Split, cfg: TrainConfig) -> nn.Module:
    """AdamW + cosine schedule on cross-entropy; returns the model in eval mode."""
    make_deterministic(cfg.seed)
    xs = [torch.from_numpy(a) for a in data.inputs]
    y = torch.from_numpy(data.y)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.2
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(*(x[idx] for x in xs)), y[idx])
            loss.backward()
            if cfg.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    """Logits of an eval-mode model as float32 numpy (x: one array or arrays in argument order)."""
    model.eval()
    xs = x.values() if isinstance(x, dict) else (x,)
    return model(*(torch.from_numpy(a) for a in xs)).numpy()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == y).mean())
