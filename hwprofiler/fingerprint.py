"""Device fingerprints: what a latency number depends on, and a short id for it.

Caches and lookup tables are keyed by the id, so a table copied to another host is reused only
when the runtime and what it depends on (for onnxruntime: CPU, core count, version and session
settings) all match. The spec's name and description are left out: renaming a device must not
throw its measurements away. The measurement policy is in: how numbers were taken is part of
what they mean.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hwprofiler.devices import DeviceSpec, load_device
from hwprofiler.runtimes import get_runtime


def local_fingerprint(spec: DeviceSpec) -> dict[str, Any]:
    """The fingerprint of `spec` run on this host."""
    return {
        "runtime": spec.runtime,
        **get_runtime(spec.runtime).fingerprint(spec),
        "batch": spec.batch,
        "dtype": spec.dtype,
        "policy": spec.policy.to_dict(),
        "kernel_policy": spec.kernel_policy.to_dict(),
    }


def fingerprint(spec: DeviceSpec) -> dict[str, Any]:
    """Fingerprint of a device; a remote device is asked for its own (GET /device)."""
    if spec.is_remote:
        from hwprofiler.client import client_for

        return dict(client_for(spec).device()["fingerprint"])
    return local_fingerprint(spec)


def usable_device(device: DeviceSpec | str) -> DeviceSpec:
    """The device, checked runnable on this host: a local device is fingerprinted, which needs its
    runtime installed and the settings it asks for (OpenVINO bf16 needs bf16 units); `DeviceError`
    says what is missing. A remote device is checked by its server."""
    spec = load_device(device)
    if not spec.is_remote:
        local_fingerprint(spec)
    return spec


def fingerprint_id(fp: dict[str, Any] | DeviceSpec) -> str:
    """A short stable hash (16 hex digits) of a fingerprint dict or of a spec's fingerprint."""
    if isinstance(fp, DeviceSpec):
        fp = fingerprint(fp)
    fp = {k: v for k, v in fp.items() if k != "fingerprint_id"}
    blob = json.dumps(fp, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
