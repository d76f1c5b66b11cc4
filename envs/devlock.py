"""One measurement at a time per device on this host.

Several env workers (SubprocVecEnv) or search processes timing kernels or networks at the same
moment on the same CPU corrupt each other's numbers. Live measurements and LUT misses therefore
run under an advisory file lock, one per device fingerprint; accuracy evaluation does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hwprofiler.cache import default_cache_dir, file_lock


@contextlib.contextmanager
def device_lock(fingerprint_id: str, enabled: bool = True) -> Iterator[None]:
    if not enabled:
        yield
        return
    with file_lock(Path(default_cache_dir()) / "locks" / f"{fingerprint_id}.lock"):
        yield
