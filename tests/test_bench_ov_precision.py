"""bench/ov_precision.py: what OpenVINO compiled a bf16 hint as, recorded from the compiled model and
said in the section (emulated bf16 and f32 fallback are different costs). Real OpenVINO runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'hilprune[openvino]'")

from bench import ov_precision  # noqa: E402
from hwprofiler import load_device  # noqa: E402
from hwprofiler.runtimes import ov  # noqa: E402
from hwprofiler.testing import tiny_cnn  # noqa: E402


def test_predictions_report_the_precision_openvino_compiled(monkeypatch):
    monkeypatch.setattr(ov, "allow_emulated_precision", True)
    data = tiny_cnn(c=8, c2=None, hw=8).SerializeToString()
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    f32 = load_device("ov-cpu-1t")
    pred, compiled = ov_precision.predictions(data, f32, x)
    assert compiled == "f32"
    assert pred.shape == (3,) and set(pred.tolist()) <= set(range(10))
    bf16 = replace(f32, runtime_options=f32.runtime_options | {"INFERENCE_PRECISION_HINT": "bf16"})
    assert ov_precision.predictions(data, bf16, x)[1] in {"f32", "bf16"}  # as this CPU allows


def _section(compiled_as: list[str | None]) -> str:
    rows = [
        {"model": f"m{i}", "ort_ms": 1.0, "f32_ms": 1.0, "bf16_ms": 1.0, "f32_acc": 0.9, "bf16_acc": 0.9, "agreement": 1.0}
        | ({} if c is None else {"bf16_compiled_as": c})
        for i, c in enumerate(compiled_as)
    ]
    machine = {"command": "c", "cpu": "x", "cores": 2, "python": "3", "versions": {}, "date": "d"}
    res = {"machine": machine, "rounds": 4, "test_size": 10, "capabilities": ["FP32", "INT8"], "rows": rows}
    return ov_precision.markdown(res)


def test_the_section_says_whether_bf16_was_emulated_or_ran_as_f32():
    assert "compiled the bf16 hint as f32" in _section(["f32", "f32"])
    assert "emulating it" in _section(["bf16"])
    assert "emulates it or runs f32" in _section([None])  # results from before the record
    assert "as bf16 or f32, by model" in _section(["f32", "bf16"])
