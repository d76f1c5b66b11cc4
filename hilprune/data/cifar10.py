"""CIFAR-10 in its python format (`cifar-10-batches-py/data_batch_1..5`, `test_batch`)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .bundle import DatasetBundle, make_bundle

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def _find_dir(data_dir: str | Path | None) -> Path | None:
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("HILPRUNE_DATA"):
        roots.append(Path(os.environ["HILPRUNE_DATA"]))
    for root in roots:
        for d in (root, root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py"):
            if (d / "test_batch").is_file() and (d / "data_batch_1").is_file():
                return d
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            # The CIFAR-10 python files are pickles by design; read them only from a folder the user named.
            obj = pickle.load(fh, encoding="bytes")  # noqa: S301
    except Exception as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from exc
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path} has no 'data'/'labels' entries: not a CIFAR-10 python batch")
    x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(labels, dtype=np.int64)


def load_cifar10_bundle(data_dir: str | Path | None = None, val_size: int = 5000) -> DatasetBundle:
    d = _find_dir(data_dir)
    if d is None:
        raise DataError(
            "CIFAR-10 not found: download cifar-10-python.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and pass --data-dir (or set HILPRUNE_DATA)"
        )
    parts = [_read_batch(d / name) for name in TRAIN_BATCHES if (d / name).is_file()]
    xtr = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_batch(d / "test_batch")
    return make_bundle("cifar10", xtr, ytr, xte.astype(np.float32) / 255.0, yte, min(val_size, len(xtr) // 5), 10)
