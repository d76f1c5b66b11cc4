"""On-disk cache of measurements keyed by (device fingerprint id, sha256 of the model bytes).

Re-measuring the same graph on the same device is wasted device time; a JSON file per entry
keeps the cache inspectable and safe to share between processes (writes are atomic renames).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]{8,64}$")


def default_cache_dir() -> Path:
    """`$HWPROFILER_CACHE`, else `~/.cache/hilprune/hwprofiler`."""
    env = os.environ.get("HWPROFILER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hilprune" / "hwprofiler"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if needed) between processes of this host.

    Where no lock can be had (read-only folder, no fcntl), it yields without one: callers use it
    to keep measurements or writes apart, never for correctness they cannot do without.
    """
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
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


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON next to `path` and rename it into place, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class MeasurementCache:
    """`root/<fingerprint_id>/<sha256>.json`; counts hits and misses for callers and tests."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "measurements"
        self.hits = 0
        self.misses = 0

    def _path(self, fingerprint_id: str, digest: str) -> Path:
        if not (_HEX.match(fingerprint_id) and _HEX.match(digest)):
            raise ValueError("cache keys must be hex digests")
        return self.root / fingerprint_id / f"{digest}.json"

    def get(self, fingerprint_id: str, digest: str) -> dict[str, Any] | None:
        path = self._path(fingerprint_id, digest)
        try:
            with path.open(encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            self.discard(fingerprint_id, digest)
            return None
        self.hits += 1
        return data

    def discard(self, fingerprint_id: str, digest: str) -> None:
        """A record that cannot be used (truncated, not JSON, fields missing) counts as a miss and
        is measured again, which overwrites it; the user is told which file it was."""
        self.misses += 1
        log.warning("the cached measurement %s could not be used; measuring again", self._path(fingerprint_id, digest))

    def put(self, fingerprint_id: str, digest: str, record: dict[str, Any]) -> None:
        atomic_write_json(self._path(fingerprint_id, digest), record)
