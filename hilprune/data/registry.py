"""Names, shapes and loaders of the data sets hilprune knows, without loading any data."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    val_size: int
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, 360, "scikit-learn's bundled 8x8 digits (1,797 images)"),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, 5000, "Fashion-MNIST, 28x28 grey, 60k train / 10k test"),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, 5000, "CIFAR-10 python batches, 32x32 RGB, 50k train / 10k test"),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]
