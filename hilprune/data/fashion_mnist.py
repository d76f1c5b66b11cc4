"""Fashion-MNIST from IDX files found on disk, or downloaded (checksummed) when online.

Looked up, in order: --data-dir, $HILPRUNE_DATA, the user cache dir, and
/usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist` package).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import DataError
from .bundle import DatasetBundle, make_bundle
from .idx import read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# sha256 of the *decompressed* files: Debian recompresses the .gz, the content is the same.
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hilprune" / "fashion-mnist"


def candidate_dirs(data_dir: str | Path | None) -> list[Path]:
    dirs: list[Path] = []
    if data_dir:
        dirs += [Path(data_dir), Path(data_dir) / "fashion-mnist"]
    if os.environ.get("HILPRUNE_DATA"):
        env = Path(os.environ["HILPRUNE_DATA"])
        dirs += [env, env / "fashion-mnist"]
    dirs += [user_cache_dir(), DEBIAN_DIR]
    return dirs


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_files(data_dir: str | Path | None = None) -> dict[str, Path] | None:
    """The first directory holding all four IDX files, or None."""
    for directory in candidate_dirs(data_dir):
        found = {key: _find(directory, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def download(dest: Path | None = None, timeout: float = 30.0) -> Path:
    """Download the four files into the user cache dir and check their checksums."""
    dest = dest or user_cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for stem in FILES.values():
        target = dest / (stem + ".gz")
        if target.is_file():
            continue
        with urllib.request.urlopen(MIRROR + stem + ".gz", timeout=timeout) as resp:  # noqa: S310 (fixed https mirror)
            raw = resp.read()
        digest = hashlib.sha256(gzip.decompress(raw)).hexdigest()
        if digest != SHA256[stem]:
            raise DataError(f"downloaded {stem}.gz has sha256 {digest}, expected {SHA256[stem]}: not saved")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(raw)
        tmp.replace(target)
    return dest


def _missing_message(data_dir: str | Path | None) -> str:
    where = ", ".join(str(d) for d in candidate_dirs(data_dir))
    return (
        f"Fashion-MNIST not found (looked in {where}) and could not be downloaded. Get it either way: "
        f"'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or download the four "
        f"*-ubyte.gz files from {MIRROR} into a folder and pass --data-dir (or set HILPRUNE_DATA)"
    )


def load_fashion_mnist_bundle(
    data_dir: str | Path | None = None, val_size: int = 5000, allow_download: bool = True
) -> DatasetBundle:
    files = find_files(data_dir)
    if files is None and allow_download:
        try:
            download()
        except DataError:
            raise
        except Exception:
            raise DataError(_missing_message(data_dir)) from None
        files = find_files(data_dir)
    if files is None:
        raise DataError(_missing_message(data_dir))
    xtr, ytr = read_idx(files["train_images"]), read_idx(files["train_labels"])
    xte, yte = read_idx(files["test_images"]), read_idx(files["test_labels"])
    if xtr.ndim != 3 or len(xtr) != len(ytr) or xte.ndim != 3 or len(xte) != len(yte):
        raise DataError(f"Fashion-MNIST files in {files['train_images'].parent} have inconsistent shapes")
    to_float = lambda a: (a.astype(np.float32) / 255.0)[:, None, :, :]  # noqa: E731
    return make_bundle("fashion-mnist", to_float(xtr), ytr, to_float(xte), yte, val_size, 10)
