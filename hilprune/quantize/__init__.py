"""INT8 export with the quantization scheme chosen by measurement on the target device.

Names are loaded on first use, so `from hilprune.quantize.defaults import ...` (the CLI at
start-up) does not import torch or onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Scheme": "hwprofiler.quantization",
    "candidate_schemes": "hwprofiler.quantization",
    "TrainCalibration": ".calibration",
    "fp32_nodes": ".mixed",
    "module_of_node": ".mixed",
    "QuantizeOptions": ".pipeline",
    "QuantizeOutcome": ".pipeline",
    "quantize_for_device": ".pipeline",
    "Selection": ".select",
    "Timing": ".select",
    "Trial": ".select",
    "select_scheme": ".select",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
