"""Device fingerprints: what a latency number depends on, and a short id for it.

Caches and lookup tables are keyed by the id, so a table copied to another host is reused only
when CPU, core count, onnxruntime version and session settings all match.  The spec's name and
description are left out: renaming a device must not throw its measurements away.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from typing import Any

from hwprofiler.devices import DeviceSpec

_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")


@lru_cache(maxsize=1)
def _cpu_info() -> dict[str, Any]:
    model = ""
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key in ("model name", "Hardware", "Model") and not model:
                    model = value
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                    cores.add((phys, core))
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "os": platform.system(),
        "logical_cores": os.cpu_count() or 0,
        "physical_cores": len(cores) or None,
        "isa": sorted(flags.intersection(_ISA_FLAGS)),
    }


def local_fingerprint(spec: DeviceSpec) -> dict[str, Any]:
    """The fingerprint of `spec` run on this host."""
    import onnxruntime as ort

    return {
        **_cpu_info(),
        "onnxruntime": ort.__version__,
        "providers": list(spec.providers),
        "provider_options": [dict(o) for o in spec.provider_options],
        "intra_op_threads": spec.intra_op_threads,
        "graph_optimization_level": spec.graph_optimization_level,
        "session_config": dict(sorted(spec.session_config.items())),
        "batch": spec.batch,
        "dtype": spec.dtype,
        # How the numbers were taken is part of what they mean: a new policy starts new tables.
        "policy": spec.policy.to_dict(),
        "kernel_policy": spec.kernel_policy.to_dict(),
    }


def fingerprint(spec: DeviceSpec) -> dict[str, Any]:
    """Fingerprint of a device; a remote device is asked for its own (GET /device)."""
    if spec.is_remote:
        from hwprofiler.client import client_for

        return dict(client_for(spec).device()["fingerprint"])
    return local_fingerprint(spec)


def fingerprint_id(fp: dict[str, Any] | DeviceSpec) -> str:
    """A short stable hash (16 hex digits) of a fingerprint dict or of a spec's fingerprint."""
    if isinstance(fp, DeviceSpec):
        fp = fingerprint(fp)
    fp = {k: v for k, v in fp.items() if k != "fingerprint_id"}
    blob = json.dumps(fp, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
