"""One measurement at a time per device on this host.

Several env workers (SubprocVecEnv) or search processes timing kernels or networks at the same
moment on the same CPU corrupt each other's numbers. Live measurements and LUT misses therefore
run under an advisory file lock, one per device fingerprint; accuracy evaluation does not.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from hwprofiler.cache import default_cache_dir


@contextlib.contextmanager
def device_lock(fingerprint_id: str, enabled: bool = True) -> Iterator[None]:
    if not enabled:
        yield
        return
    path = Path(default_cache_dir()) / "locks" / f"{fingerprint_id}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # read-only cache dir: measure without the lock rather than fail
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
