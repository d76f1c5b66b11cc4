"""Shared test set-up: torch on one thread (2 threads on a busy 2-core machine is ~100x slower)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# One hwprofiler cache (LUTs, measurements) per test session: tests never see, nor change, the
# user's tables or those of other processes measuring on this machine at the same time.
import tempfile  # noqa: E402

os.environ["HWPROFILER_CACHE"] = tempfile.mkdtemp(prefix="hilprune-test-hwcache-")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# The built-in devices time several windows per network and per kernel to span a shared CPU's speed
# modes; tests assert relations within one run and need no such care.
os.environ.setdefault("HWPROFILER_ROUND_S", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

TESTS_DIR = Path(__file__).parent
FIXTURES = TESTS_DIR / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """tests/fixtures (user model files and the like)."""
    return FIXTURES


@pytest.fixture
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty $HILPRUNE_DATA and $XDG_CACHE_HOME: no data set is found unless a test writes one."""
    data, cache = tmp_path / "hilprune-data", tmp_path / "xdg-cache"
    data.mkdir()
    cache.mkdir()
    monkeypatch.setenv("HILPRUNE_DATA", str(data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return data
