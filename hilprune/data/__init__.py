"""Data sets: `load_dataset(name)` returns train/val/test tensors with a fixed-seed val split."""

from __future__ import annotations

from pathlib import Path

from .bundle import DatasetBundle, Split
from .registry import DATASETS, DatasetInfo, dataset_info


def load_dataset(name: str, data_dir: str | Path | None = None, val_size: int | None = None) -> DatasetBundle:
    """Load a data set by name (see DATASETS); `val_size` defaults to the data set's own."""
    info = dataset_info(name)
    size = val_size if val_size is not None else info.val_size
    if name == "digits":
        from .digits import load_digits_bundle

        return load_digits_bundle(size)
    if name == "fashion-mnist":
        from .fashion_mnist import load_fashion_mnist_bundle

        return load_fashion_mnist_bundle(data_dir, size)
    from .cifar10 import load_cifar10_bundle

    return load_cifar10_bundle(data_dir, size)


__all__ = ["DATASETS", "DatasetBundle", "DatasetInfo", "Split", "dataset_info", "load_dataset"]
