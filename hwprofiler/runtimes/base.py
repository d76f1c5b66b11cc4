"""What a runtime must provide to be a target device: load a model, time back-to-back runs.

A runtime also says which ONNX nodes it fuses into one kernel (`fused_groups`), since that is
what a kernel lookup table must time. Everything above this (warm-up, rounds, interleaving two
models, the estimator, caching, the LUT, the predictor) is shared, so a new runtime (a simulated CPU, OpenVINO) is measured by the
same rules as onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import onnx

    from hwprofiler.devices import DeviceSpec


class Runnable(Protocol):
    """One model loaded on a device, ready to run."""

    def time_runs(self, n: int) -> list[float]:
        """Run the model `n` times back to back; each run's latency in ms."""
        ...

    def close(self) -> None:
        """Release the session (idempotent)."""
        ...


class Runtime(Protocol):
    """A model runtime a device spec can name (`runtime = "..."` in its TOML)."""

    name: str

    def check_options(self, options: dict[str, Any], source: str) -> dict[str, Any]:
        """The runtime's TOML table, validated and with defaults filled; `DeviceError` names the mistake."""
        ...

    def status(self, spec: DeviceSpec | None = None) -> tuple[bool, str]:
        """(usable here, one line: version, or how to install it); with `spec`, also whether this
        machine can run that device's settings."""
        ...

    def fingerprint(self, spec: DeviceSpec) -> dict[str, Any]:
        """What latencies on this runtime depend on (version, processor, settings)."""
        ...

    def load(self, data: bytes, spec: DeviceSpec) -> Runnable:
        """Load a validated serialized ONNX model for timing."""
        ...

    def kernel_layout(self, data: bytes, spec: DeviceSpec) -> str | None:
        """How the runtime lays out the compute of a one-kernel graph: "blocked" (a SIMD channel-block
        layout, such as onnxruntime's NCHWc), "plain", or None where the runtime has no such choice.

        Read from what the runtime itself does with the graph, never assumed from the CPU: which
        channel counts run blocked changes with the instruction set and the runtime's version."""
        ...

    def fused_groups(self, model: onnx.ModelProto, spec: DeviceSpec) -> list[list[int]]:
        """Which nodes of `model` (shape-inferred, as `onnx_kernels.prepare_model` gives it) run as
        one kernel: node indices per kernel, in execution order. The LUT times these kernels, so
        they must be the runtime's own fusions."""
        ...
