"""In-memory train/val/test tensors and the fixed-seed split of train into train and val.

The test split is for final reports only: searches and the environment see `val`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Split:
    x: torch.Tensor  # float32, N x C x H x W, normalized
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int | None) -> Split:
        """The first n samples (the split is already shuffled by a fixed seed)."""
        if n is None or n >= len(self):
            return self
        return Split(self.x[:n], self.y[:n])


@dataclass
class DatasetBundle:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: list[float]
    std: list[float]


SPLIT_SEED = 20260101


def make_bundle(
    name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, val_size: int, num_classes: int
) -> DatasetBundle:
    """Normalize by the train split's per-channel statistics and carve a fixed-seed val split.

    x arrays are N x C x H x W floats in [0, 1].
    """
    if val_size >= len(x_train):
        raise ValueError(f"val_size {val_size} must be smaller than the train split ({len(x_train)})")
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(x_train))
    val_idx, train_idx = order[:val_size], order[val_size:]
    mean = x_train[train_idx].mean(axis=(0, 2, 3))
    std = x_train[train_idx].std(axis=(0, 2, 3)) + 1e-8

    def norm(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32))

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    test_order = np.random.default_rng(SPLIT_SEED + 1).permutation(len(x_test))
    return DatasetBundle(
        name=name,
        train=Split(norm(x_train[train_idx]), labels(y_train[train_idx])),
        val=Split(norm(x_train[val_idx]), labels(y_train[val_idx])),
        test=Split(norm(x_test[test_order]), labels(y_test[test_order])),
        input_shape=tuple(int(d) for d in x_train.shape[1:]),  # type: ignore[arg-type]
        num_classes=num_classes,
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
    )
