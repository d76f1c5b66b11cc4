"""The host processor as latencies depend on it: model name, core counts and SIMD extensions."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

# Extensions that change which kernels a CPU runtime picks (SIMD width, int8 dot products, AMX).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "asimd", "sve")


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """Model, architecture, OS, logical and physical cores and ISA flags of this host."""
    model = ""
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    phys = ""
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
                    cores.add((phys, value))
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "os": platform.system(),
        "logical_cores": os.cpu_count() or 0,
        "physical_cores": len(cores) or None,
        "isa": sorted(flags.intersection(ISA_FLAGS)),
    }
