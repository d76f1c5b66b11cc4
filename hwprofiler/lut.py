"""Per-device lookup table of kernel latencies, persisted as one JSON file.

The file carries the device fingerprint, so it can be copied to another host of the same kind
and is refused on a different one.  A miss is measured on the device itself (through the
profiler server for a remote device), with the device's shorter kernel policy.  The table also
stores the live (whole-network) observations the predictor fits its overhead model to.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hwprofiler.cache import atomic_write_json, default_cache_dir, file_lock
from hwprofiler.devices import DeviceSpec, load_device
from hwprofiler.errors import DeviceError
from hwprofiler.fingerprint import fingerprint, fingerprint_id
from hwprofiler.kernel_chain import measure_kernel_chained
from hwprofiler.kernels import KernelSpec, build_kernel_model
from hwprofiler.measure import Measurement, measure_local, model_bytes
from hwprofiler.runtimes import get_runtime

FORMAT = 3  # 2: entries hold the estimator's latency_ms; 3: and the layout the runtime chose
REMOTE_CHUNK = 8  # kernels per POST /kernels: short requests, a live progress bar
log = logging.getLogger(__name__)


KernelTiming = tuple[Measurement, str | None]  # the kernel's latency, and the layout the runtime ran it in


def measure_kernels(specs: list[KernelSpec], device: DeviceSpec) -> list[KernelTiming]:
    """Time each kernel's one-kernel model on the device with its kernel policy (net of the
    per-inference fixed cost where the policy chains kernels, `hwprofiler.kernel_chain`), and read
    the layout the runtime chose for it (see `Runtime.kernel_layout`)."""
    if device.is_remote:
        from hwprofiler.client import client_for

        return client_for(device).kernels(specs)
    runtime, policy = get_runtime(device.runtime), device.kernel_policy
    out = []
    for s in specs:
        model = build_kernel_model(s, device.dtype)
        data = model_bytes(model)
        m = measure_kernel_chained(model, device, policy) if policy.chain > 1 else measure_local(data, device, policy)
        out.append((m, runtime.kernel_layout(data, device)))
    return out


REBUILD = "delete it, or rebuild it with `hilprune lut build --model M --device D`"


def _read_lut_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeviceError(f"cannot read the LUT {path} ({type(e).__name__}: {e}); {REBUILD}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("fingerprint"), dict):
        raise DeviceError(f"{path} is not a hwprofiler LUT of format {FORMAT} (an older or foreign file); {REBUILD}")
    entries, observations = data.get("entries", []), data.get("observations", [])
    ok = isinstance(entries, list) and isinstance(observations, list)
    ok = ok and all(
        isinstance(e, dict) and isinstance(e.get("key"), str) and isinstance(e.get("latency_ms"), (int, float)) for e in entries
    )
    ok = ok and all(isinstance(o, dict) for o in observations)
    if not ok:
        raise DeviceError(f"{path} is a damaged hwprofiler LUT (malformed entries or observations); {REBUILD}")
    return data


class LUT:
    """Kernel latency table for one device fingerprint.

    `LUT(device)` opens (or starts) the table at the default path
    `<cache>/luts/<fingerprint_id>.json`; `LUT.load(path, device)` opens a copied file.
    """

    def __init__(
        self,
        device: DeviceSpec | str | None,
        path: str | os.PathLike[str] | None = None,
        *,
        strict: bool = True,
        fingerprint_data: dict[str, Any] | None = None,
    ) -> None:
        self.device = load_device(device) if device is not None else None
        if fingerprint_data is None:
            if self.device is None:
                raise DeviceError("a LUT needs a device or a fingerprint")
            fingerprint_data = fingerprint(self.device)
        self.fingerprint = {k: v for k, v in fingerprint_data.items() if k != "fingerprint_id"}
        self.fingerprint_id = fingerprint_id(self.fingerprint)
        self.path = Path(path) if path is not None else self.default_path(self.fingerprint_id)
        self.entries: dict[str, dict[str, Any]] = {}
        self.observations: list[dict[str, Any]] = []
        self.measured = 0  # kernels measured by this object (misses)
        if self.path.exists():
            self._read(self.path, strict=strict)

    @staticmethod
    def default_path(fp_id: str) -> Path:
        """Where a device's table lives unless a path is given: `<cache>/luts/<fingerprint_id>.json`."""
        return default_cache_dir() / "luts" / f"{fp_id}.json"

    # persistence -------------------------------------------------------------------------
    def _read(self, path: Path, strict: bool) -> None:
        data = _read_lut_file(path)
        file_id = fingerprint_id(data["fingerprint"])
        if strict and file_id != self.fingerprint_id:
            raise DeviceError(
                f"LUT {path} was measured on another device (fingerprint {file_id}, this one is "
                f"{self.fingerprint_id}); measure a new table, or pass strict=False to use it anyway"
            )
        self.entries.update({e["key"]: e for e in data.get("entries", [])})
        self.observations.extend(data.get("observations", []))

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: DeviceSpec | str | None = None, *, strict: bool = True) -> LUT:
        """Open a LUT file; with a device, refuse a file measured on a different fingerprint."""
        path = Path(path)
        if not path.is_file():
            raise DeviceError(f"LUT file {path} does not exist")
        fp = _read_lut_file(path)["fingerprint"] if device is None else None
        return cls(device, path, strict=strict, fingerprint_data=fp)

    def save(self, path: str | os.PathLike[str] | None = None, *, adopt_entries: bool = False) -> Path:
        """Write the table atomically (default: where it was opened) and return the path.

        What another process saved to the same file since this one read it is kept in the file
        (merged under a file lock), so two searches sharing a device's table do not erase each
        other's kernels. This object's observations are left as they are (a running search's
        predictor must not change because another process saved); with `adopt_entries` it takes
        the kernels the file has and it lacks, so they need not be timed again here.
        """
        target = Path(path) if path is not None else self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(target.with_name(target.name + ".lock")):
            entries, observations = dict(self.entries), list(self.observations)
            if target.is_file():
                try:
                    other = _read_lut_file(target)
                except DeviceError:
                    other = None
                if other is not None and fingerprint_id(other["fingerprint"]) == self.fingerprint_id:
                    for e in other.get("entries", []):
                        entries.setdefault(e["key"], e)
                        if adopt_entries:
                            self.entries.setdefault(e["key"], e)
                    seen = {json.dumps(o, sort_keys=True) for o in observations}
                    observations += [o for o in other.get("observations", []) if json.dumps(o, sort_keys=True) not in seen]
            atomic_write_json(
                target,
                {
                    "format": FORMAT,
                    "fingerprint_id": self.fingerprint_id,
                    "fingerprint": self.fingerprint,
                    "device": self.device.to_dict() if self.device is not None else None,
                    "entries": sorted(entries.values(), key=lambda e: e["key"]),
                    "observations": observations,
                },
            )
        return target

    # lookups -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, spec: KernelSpec) -> bool:
        return spec.key() in self.entries

    def _store(self, spec: KernelSpec, m: Measurement, layout: str | None) -> None:
        self.entries[spec.key()] = {"key": spec.key(), "spec": spec.to_dict(), **m.to_dict(samples=False), "layout": layout}

    def require_device(self) -> DeviceSpec:
        """The device that measures misses; a LUT opened without one cannot measure."""
        if self.device is None:
            raise DeviceError(f"LUT {self.path} has no device attached to measure a missing kernel; load it with one")
        return self.device

    def get(self, spec: KernelSpec) -> float:
        """Median latency of a kernel in ms, measured on the device on a miss."""
        entry = self.entries.get(spec.key())
        if entry is None:
            ((m, layout),) = measure_kernels([spec], self.require_device())
            self._store(spec, m, layout)
            self.measured += 1
            return m.latency_ms
        return float(entry["latency_ms"])

    def layout(self, spec: KernelSpec) -> str | None:
        """The layout the device's runtime ran the kernel in ("blocked", "plain" or None), measured on a miss."""
        if spec.key() not in self.entries:
            self.get(spec)
        layout = self.entries[spec.key()].get("layout")
        return None if layout is None else str(layout)

    def missing(self, specs: Iterable[KernelSpec]) -> list[KernelSpec]:
        """Distinct kernels of `specs` not yet in the table, in first-seen order."""
        seen: dict[str, KernelSpec] = {}
        for s in specs:
            if s.key() not in self.entries:
                seen.setdefault(s.key(), s)
        return list(seen.values())

    def fill(self, specs: Iterable[KernelSpec], progress: bool = True, save: bool = True) -> int:
        """Measure every missing kernel, with a progress bar showing the time left; returns the count."""
        todo = self.missing(specs)
        if not todo:
            return 0
        device = self.require_device()
        chunk = REMOTE_CHUNK if device.is_remote else 1
        bar = _progress(len(todo), f"LUT {device.name}", progress)
        try:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                for spec, (m, layout) in zip(part, measure_kernels(part, device)):
                    self._store(spec, m, layout)
                self.measured += len(part)
                bar.update(len(part))
        finally:
            bar.close()
            if save:
                self.save()
        return len(todo)

    def add_observation(self, record: dict[str, Any]) -> None:
        self.observations.append(record)


def open_lut(device: DeviceSpec | str, path: str | os.PathLike[str] | None = None) -> LUT:
    """The device's LUT. A file at the default place (the cache) that cannot be read, or belongs to
    another device, is set aside (renamed `*.bad-<time>.json`) and a new table started, with a
    warning naming both files: a cache must never stop a search. A file the user named is theirs:
    then one `DeviceError` line names it and says how to rebuild it."""
    try:
        return LUT(device, path)
    except DeviceError:
        if path is not None:
            raise
    spec = load_device(device)
    bad_path = LUT.default_path(fingerprint_id(spec))
    aside = bad_path.with_name(f"{bad_path.stem}.bad-{time.strftime('%Y%m%d-%H%M%S')}.json")
    bad_path.replace(aside)
    log.warning("the LUT %s could not be used; it was moved to %s and a new one is being measured", bad_path, aside)
    return LUT(spec, path)


class _LogBar:
    """Stand-in for tqdm: a log line every 10% with the estimated time left."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.done, self.start, self.next_pct = 0, time.monotonic(), 10

    def update(self, n: int) -> None:
        self.done += n
        pct = 100 * self.done // self.total
        if self.enabled and pct >= self.next_pct:
            rate = (time.monotonic() - self.start) / self.done
            log.info("%s: %d/%d kernels, about %.0f s left", self.desc, self.done, self.total, rate * (self.total - self.done))
            self.next_pct = pct + 10

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return _LogBar(total, desc, enabled)
    return tqdm(total=total, desc=desc, unit="kernel", disable=not enabled)
