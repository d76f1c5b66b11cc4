"""scikit-learn's bundled 8x8 digits: the embedded data set for tests and the quick demo."""

from __future__ import annotations

import numpy as np

from .bundle import DatasetBundle, make_bundle

TEST_SIZE = 360


def load_digits_bundle(val_size: int = 360) -> DatasetBundle:
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = (ds.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = ds.target.astype(np.int64)
    order = np.random.default_rng(7).permutation(len(x))  # fixed test split
    test_idx, train_idx = order[:TEST_SIZE], order[TEST_SIZE:]
    return make_bundle("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], val_size, 10)
