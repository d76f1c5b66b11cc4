"""hwprofiler: measure and predict ONNX model latency on a target device.

Runs with onnx, numpy and a runtime (onnxruntime; optionally OpenVINO; or the simulated CPU),
and starlette/uvicorn to serve; it never imports torch,
so it can be installed alone on the device (`pip install hilprune[device]`).
"""

from __future__ import annotations

from hwprofiler.devices import DeviceSpec, MeasurePolicy, list_devices, load_device
from hwprofiler.errors import DeviceError, InvalidModelError, KernelError
from hwprofiler.fingerprint import fingerprint, fingerprint_id, usable_device
from hwprofiler.fusion import device_kernel_nodes, device_kernels
from hwprofiler.kernels import KernelSpec, build_kernel_model
from hwprofiler.lut import LUT, open_lut
from hwprofiler.measure import measure_onnx, measure_paired
from hwprofiler.measurement import Measurement, PairedMeasurement
from hwprofiler.onnx_kernels import kernels_from_onnx
from hwprofiler.predictor import FlopsPredictor, Predictor, fidelity, flops_predictor

__all__ = [
    "LUT",
    "DeviceError",
    "DeviceSpec",
    "FlopsPredictor",
    "InvalidModelError",
    "KernelError",
    "KernelSpec",
    "MeasurePolicy",
    "Measurement",
    "PairedMeasurement",
    "Predictor",
    "build_kernel_model",
    "device_kernel_nodes",
    "device_kernels",
    "fidelity",
    "fingerprint",
    "fingerprint_id",
    "flops_predictor",
    "kernels_from_onnx",
    "list_devices",
    "load_device",
    "measure_onnx",
    "measure_paired",
    "open_lut",
    "usable_device",
]
