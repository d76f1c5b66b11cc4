"""Data loaders on small files written by the tests in the real formats (IDX, CIFAR-10 pickles),
the bundled digits, the fixed-seed splits, and the one clear error when a data set is absent."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import hilprune.data.fashion_mnist as fm
from hilprune.data import DATASETS, load_dataset
from hilprune.data.bundle import make_bundle
from hilprune.data.idx import read_idx, write_idx
from hilprune.errors import DataError

N_TRAIN, N_TEST = 40, 12


def unique_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 images whose first pixel(s) encode their index, so each one can be traced."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, 0] = np.arange(n) % 256
    flat[:, 1] = np.arange(n) // 256
    return x


def write_fashion(folder: Path, compress: bool) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": unique_images(N_TRAIN, (28, 28), 0),
        "train-labels-idx1-ubyte": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": unique_images(N_TEST, (28, 28), 1),
        "t10k-labels-idx1-ubyte": (np.arange(N_TEST) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        write_idx(folder / (stem + (".gz" if compress else "")), arr)
    return arrays


@pytest.fixture
def no_fashion_anywhere(isolated_data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Fashion-MNIST on disk (Debian's folder hidden) and no network."""
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian-dataset")

    def offline(*_a, **_k):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(fm.urllib.request, "urlopen", offline)
    return isolated_data_env


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path: Path, name: str) -> None:
    arr = unique_images(5, (3, 4), 2)
    write_idx(tmp_path / name, arr)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    np.testing.assert_array_equal(read_idx(tmp_path / name), arr)


def test_idx_errors(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((4, 5), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


# --- Fashion-MNIST -----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_fashion_mnist_from_data_dir(tmp_path: Path, no_fashion_anywhere: Path, compress: bool) -> None:
    arrays = write_fashion(tmp_path / "fm", compress)
    data = load_dataset("fashion-mnist", data_dir=tmp_path / "fm", val_size=8)
    assert data.input_shape == DATASETS["fashion-mnist"].input_shape == (1, 28, 28)
    assert (len(data.train), len(data.val), len(data.test)) == (N_TRAIN - 8, 8, N_TEST)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert data.train.x.shape[1:] == (1, 28, 28)
    # normalised by the train split's statistics
    assert abs(float(data.train.x.mean())) < 1e-4
    assert float(data.train.x.std()) == pytest.approx(1.0, abs=1e-2)
    # every test image is one of the written ones, with its label
    raw_test = arrays["t10k-images-idx3-ubyte"]
    xs = data.test.x[:, 0] * data.std[0] + data.mean[0]
    idx = torch.round(xs[:, 0, 0] * 255).long() + 256 * torch.round(xs[:, 0, 1] * 255).long()
    assert sorted(idx.tolist()) == list(range(N_TEST))
    np.testing.assert_allclose(xs.numpy(), raw_test[idx.numpy()] / 255.0, atol=1e-5)
    assert data.test.y.tolist() == [int(i) % 10 for i in idx]


def test_fashion_mnist_via_env_and_subfolder(tmp_path: Path, no_fashion_anywhere: Path) -> None:
    write_fashion(no_fashion_anywhere / "fashion-mnist", compress=True)
    data = load_dataset("fashion-mnist", val_size=4)
    assert len(data.test) == N_TEST


def test_fashion_mnist_absent_names_both_ways(tmp_path: Path, no_fashion_anywhere: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "Fashion-MNIST not found" in msg and "could not be downloaded" in msg
    assert "apt-get install dataset-fashion-mnist" in msg  # way 1: the Debian package
    assert "--data-dir" in msg and fm.MIRROR in msg  # way 2: download the files yourself
    assert str(tmp_path / "empty") in msg  # says where it looked


def test_fashion_mnist_incomplete_folder_is_not_used(tmp_path: Path, no_fashion_anywhere: Path) -> None:
    write_fashion(tmp_path / "fm", compress=True)
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "fm")


def test_fashion_mnist_download_checks_sha256(tmp_path: Path, no_fashion_anywhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip
    import io

    def fake_urlopen(url: str, timeout: float = 0):
        return io.BytesIO(gzip.compress(b"tampered"))

    monkeypatch.setattr(fm.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DataError, match="sha256"):
        load_dataset("fashion-mnist")
    assert not list(fm.user_cache_dir().glob("*.gz"))  # nothing unverified is kept


# --- CIFAR-10 ----------------------------------------------------------------------------------


def write_cifar(folder: Path, per_batch: int = 10, bytes_keys: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x = unique_images(per_batch, (3 * 32 * 32,), 10 + i)
        x[:, 2] = i  # batch id
        with (folder / name).open("wb") as fh:
            pickle.dump({key("data"): x, key("labels"): [int(j) % 10 for j in range(per_batch)], key("batch_label"): name}, fh)


@pytest.mark.parametrize("bytes_keys", [False, True], ids=["str-keys", "bytes-keys"])
def test_cifar10_python_batches(tmp_path: Path, isolated_data_env: Path, bytes_keys: bool) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py", bytes_keys=bytes_keys)
    data = load_dataset("cifar10", data_dir=tmp_path, val_size=5)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (45, 5, 10)
    assert len(data.mean) == len(data.std) == 3
    # test images come from test_batch only (batch id 5 in the R plane's third pixel)
    xs = data.test.x[:, 0].reshape(10, -1) * data.std[0] + data.mean[0]
    assert torch.allclose(torch.round(xs[:, 2] * 255), torch.full((10,), 5.0))


def test_cifar10_absent(tmp_path: Path, isolated_data_env: Path) -> None:
    with pytest.raises(DataError, match="CIFAR-10 not found.*--data-dir.*HILPRUNE_DATA"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar10_bad_batch(tmp_path: Path, isolated_data_env: Path) -> None:
    write_cifar(tmp_path)
    with (tmp_path / "test_batch").open("wb") as fh:
        pickle.dump({"something": 1}, fh)
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'; known: digits, fashion-mnist, cifar10"):
        load_dataset("mnist")


# --- digits and the splits --------------------------------------------------------------------


def test_digits_bundle_shapes_and_determinism() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert (len(a.train), len(a.val), len(a.test)) == (1797 - 360 - 360, 360, 360)
    assert a.train.x.shape == (1077, 1, 8, 8)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
    assert set(a.val.y.tolist()) == set(range(10))
    small = load_dataset("digits", val_size=100)
    assert len(small.val) == 100 and len(small.train) == 1797 - 360 - 100
    # the test split holds the same samples whatever val_size (normalisation follows the train split)
    assert torch.equal(small.test.y, a.test.y)
    torch.testing.assert_close(small.test.x * small.std[0] + small.mean[0], a.test.x * a.std[0] + a.mean[0])


def test_digits_splits_partition_the_data() -> None:
    """train + val + test is exactly the data set, each sample once: val never overlaps test."""
    from sklearn.datasets import load_digits

    data = load_dataset("digits")
    rows = []
    for split in (data.train, data.val, data.test):
        raw = split.x * data.std[0] + data.mean[0]
        rows.append(torch.round(raw.reshape(len(split), -1) * 16).to(torch.int64).numpy())
    original = load_digits().images.reshape(1797, -1).astype(np.int64)
    key = lambda a: sorted(map(bytes, a.astype(np.uint8)))  # noqa: E731
    assert key(np.concatenate(rows)) == key(original)
    # no sample shared between val and test (or train), up to images that occur twice in the data set
    counts: dict[bytes, int] = {}
    for r in original.astype(np.uint8):
        counts[bytes(r)] = counts.get(bytes(r), 0) + 1
    val = {bytes(r) for r in rows[1].astype(np.uint8)}
    test = {bytes(r) for r in rows[2].astype(np.uint8)}
    assert all(counts[r] > 1 for r in val & test)


def test_make_bundle_splits_are_disjoint_and_seeded() -> None:
    n, n_test = 300, 50
    x = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
    xt = (np.arange(n_test, dtype=np.float32) + 10_000)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
    y, yt = np.arange(n) % 10, np.arange(n_test) % 10
    a = make_bundle("t", x, y, xt, yt, val_size=60, num_classes=10)
    b = make_bundle("t", x, y, xt, yt, val_size=60, num_classes=10)
    ident = lambda s, bundle: set(torch.round(s.x[:, 0, 0, 0] * bundle.std[0] + bundle.mean[0]).long().tolist())  # noqa: E731
    train, val, test = ident(a.train, a), ident(a.val, a), ident(a.test, a)
    assert len(train) == 240 and len(val) == 60 and len(test) == n_test
    assert not (train & val) and not (val & test) and not (train & test)
    assert train | val == set(range(n))
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.test.y, b.test.y)
    assert val != set(range(60))  # shuffled, not the first rows
    with pytest.raises(ValueError, match="val_size"):
        make_bundle("t", x, y, xt, yt, val_size=n, num_classes=10)


def test_split_subset() -> None:
    data = load_dataset("digits")
    sub = data.val.subset(10)
    assert len(sub) == 10 and torch.equal(sub.x, data.val.x[:10])
    assert data.val.subset(None) is data.val and data.val.subset(10_000) is data.val
