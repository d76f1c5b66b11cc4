"""Model runtimes a device can use: onnxruntime, a simulated CPU and OpenVINO.

Each runtime module is imported only when a device names it, so a target device needs only the
runtime it runs.
"""

from __future__ import annotations

import importlib

from hwprofiler.errors import DeviceError
from hwprofiler.runtimes.base import Runnable, Runtime

# name -> module holding RUNTIME
RUNTIMES = {
    "onnxruntime": "hwprofiler.runtimes.ort",
    "simulated": "hwprofiler.runtimes.simulated",
    "openvino": "hwprofiler.runtimes.ov",
}


def get_runtime(name: str) -> Runtime:
    """The runtime called `name`."""
    module = RUNTIMES.get(name)
    if module is None:
        raise DeviceError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    runtime: Runtime = importlib.import_module(module).RUNTIME
    return runtime


__all__ = ["RUNTIMES", "Runnable", "Runtime", "get_runtime"]
