"""Offline data for the zoo: scikit-learn's bundled digits and the equality task (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import equality_task, majority_task

__all__ = ["Split", "Dataset", "digits", "equality", "majority"]

DIGITS_SEED = 0
DIGITS_TEST = 450
CALIB_SIZE = 1024
EQUALITY_SEEDS = {"train": 101, "calib": 202, "test": 303}
EQUALITY_SIZES = {"train": 20000, "calib": CALIB_SIZE, "test": 2000}
MAJORITY_SEEDS = {"train": 111, "calib": 222, "test": 333}
MAJORITY_SIZES = {"train": 20000, "calib": CALIB_SIZE, "test": 2000}


@dataclass(frozen=True)
class Split:
    x: np.ndarray | dict[str, np.ndarray]  # float32 inputs, or arrays keyed by input name
    y: np.ndarray  # int64 labels

    @property
    def inputs(self) -> tuple[np.ndarray, ...]:
        """The input arrays in the model's argument order."""
        return tuple(self.x.values()) if isinstance(self.x, dict) else (self.x,)

    def head(self, n: int) -> Split:
        """The first n samples."""
        x = {k: v[:n] for k, v in self.x.items()} if isinstance(self.x, dict) else self.x[:n]
        return Split(x, self.y[:n])


@dataclass(frozen=True)
class Dataset:
    train: Split
    calib: Split
    test: Split
    task: str


def _split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
    return Split(np.ascontiguousarray(x[idx], np.float32), np.ascontiguousarray(y[idx], np.int64))


def digits(image: bool) -> Dataset:
    """sklearn digits, pixels / 16, fixed seeded split.

    test: 450 held-out samples; train: the other 1347; calib: 1024 samples of the train portion
    (a subset of train, as a user's unlabeled data would be). ``image`` gives [N, 1, 8, 8] inputs
    instead of [N, 64].
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    perm = np.random.RandomState(DIGITS_SEED).permutation(len(y))
    test_idx, train_idx = perm[:DIGITS_TEST], perm[DIGITS_TEST:]
    calib_idx = train_idx[:CALIB_SIZE]
    return Dataset(
        train=_split(x, y, train_idx),
        calib=_split(x, y, calib_idx),
        test=_split(x, y, test_idx),
        task="sklearn digits 8x8, 10 classes, pixels/16",
    )


def equality() -> Dataset:
    """Hierarchical equality: train 20000, calib 1024, test 2000, each from its own seed."""
    splits = {
        k: Split(*equality_task.sample(EQUALITY_SIZES[k], EQUALITY_SEEDS[k]))
        for k in EQUALITY_SEEDS
    }
    return Dataset(
        **splits,
        task="hierarchical equality (a==b)==(c==d), 4 entity vectors of dim 4, 2 classes",
    )


def majority() -> Dataset:
    """Hierarchical majority (models.majority_task): train 20000, calib 1024, test 2000."""
    splits = {
        k: Split(*majority_task.sample(MAJORITY_SIZES[k], MAJORITY_SEEDS[k]))
        for k in MAJORITY_SEEDS
    }
    return Dataset(
        **splits,
        task="hierarchical majority: y = (majority A/B of segment 1 == that of segment 2), "
        f"token ids [N, {majority_task.SEQ_LEN}] with padding mask, 2 classes",
    )
