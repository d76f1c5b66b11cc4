"""OpenVINO on the CPU as a device runtime: the ONNX model compiled as the device's [openvino] says.

On Intel CPUs OpenVINO is the usual deployment runtime, and it runs (and fuses, and lays out) a
model differently from onnxruntime, so the same pruning policy pays differently on it. The
device's `[openvino]` table holds OpenVINO's own compile properties (`INFERENCE_NUM_THREADS`,
`PERFORMANCE_HINT`, ...), passed to `Core.compile_model` as written; the defaults are one
thread, the LATENCY hint, and float32 inference (`INFERENCE_PRECISION_HINT = "f32"`: without it
OpenVINO runs in bf16 on CPUs that have it, and the latency would no longer be that of the
float32 model whose accuracy the search measures). A device that asks for bf16 or f16 is refused
on a CPU without native units for it (`unsupported_precision`): OpenVINO would then emulate the
precision (bf16 ran the zoo models 2.4-4.0x slower than f32 on an Ice Lake Xeon, docs/benchmarks.md
ov_precision_icelake) or quietly run f32, and either way the device would not be what its name says.

OpenVINO is an optional extra: without it the device still loads and lists, and using it says
how to install it.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from hwprofiler.cpu import cpu_info
from hwprofiler.errors import DeviceError, InvalidModelError
from hwprofiler.runtimes.ort import random_feeds

if TYPE_CHECKING:
    import onnx

    from hwprofiler.devices import DeviceSpec

OV_DEVICE = "CPU"
INSTALL = "pip install 'hilprune[openvino]'"
_BOOL = (True, False)
# OpenVINO CPU compile properties a device file may set: name -> allowed values (a tuple), or
# "int>=0" / "int>=1". OpenVINO checks them again when it compiles.
OPTIONS: dict[str, Any] = {
    "INFERENCE_NUM_THREADS": "int>=0",
    "PERFORMANCE_HINT": ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"),
    "INFERENCE_PRECISION_HINT": ("f32", "bf16", "f16"),
    "EXECUTION_MODE_HINT": ("PERFORMANCE", "ACCURACY"),
    "NUM_STREAMS": "int>=1",
    "ENABLE_CPU_PINNING": _BOOL,
    "ENABLE_HYPER_THREADING": _BOOL,
    "SCHEDULING_CORE_TYPE": ("ANY_CORE", "PCORE_ONLY", "ECORE_ONLY"),
    "CPU_DENORMALS_OPTIMIZATION": _BOOL,
}
DEFAULTS: dict[str, Any] = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
# An inference precision -> the OPTIMIZATION_CAPABILITIES entry OpenVINO's CPU plugin reports where
# the CPU runs it natively (AVX-512 BF16 or AMX for bf16; AVX-512 FP16 or AMX-FP16 for f16).
NATIVE_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}
# Set only by bench/ov_precision.py, which times the emulated precision to show what the refusal avoids.
allow_emulated_precision = False


def _check_value(key: str, value: Any, source: str) -> None:
    allowed = OPTIONS[key]
    if isinstance(allowed, str):
        low = int(allowed[-1])
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise DeviceError(f"{source} [openvino]: {key} must be an integer >= {low}, got {value!r}")
    elif value not in allowed or type(value) is not type(allowed[0]):
        raise DeviceError(f"{source} [openvino]: {key} must be one of {list(allowed)}, got {value!r}")


def openvino(spec: DeviceSpec) -> Any:
    """The openvino module, or one `DeviceError` saying how to install it or why this CPU cannot
    be the device."""
    try:
        import openvino as ov
    except ImportError:
        raise DeviceError(f"device {spec.name} needs OpenVINO: {INSTALL}") from None
    problem = unsupported_precision(spec.name, spec.runtime_options, capabilities())
    if problem and not allow_emulated_precision:
        raise DeviceError(problem)
    return ov


@lru_cache(maxsize=1)
def _capabilities() -> tuple[str, ...]:
    return tuple(str(c) for c in _core().get_property(OV_DEVICE, "OPTIMIZATION_CAPABILITIES"))


def capabilities() -> list[str]:
    """What OpenVINO's CPU plugin says this CPU runs natively (FP32, INT8, BF16, FP16, ...)."""
    return list(_capabilities())


def unsupported_precision(name: str, options: dict[str, Any], caps: list[str]) -> str | None:
    """Why device `name` cannot run here: it asks for an inference precision that this CPU's
    capabilities `caps` lack (OpenVINO would emulate it or run f32 instead); None when it can."""
    hint = options.get("INFERENCE_PRECISION_HINT", DEFAULTS["INFERENCE_PRECISION_HINT"])
    need = NATIVE_CAPABILITY.get(hint)
    if need is None or need in caps:
        return None
    return (
        f"device {name} runs OpenVINO in {hint}, but this CPU has no native {hint} (OpenVINO's CPU capabilities: "
        f"{', '.join(caps)}), so OpenVINO would emulate it or run f32; use an f32 device such as ov-cpu-1t"
    )


@lru_cache(maxsize=1)
def _core() -> Any:
    """One OpenVINO Core per process (it holds the loaded plugins)."""
    import openvino as ov

    return ov.Core()


def compile_onnx(data: bytes, spec: DeviceSpec) -> Any:
    """`data` (serialized ONNX) read and compiled for the CPU with the device's properties; a
    free leading input dimension is fixed to the device's batch first (a static shape)."""
    openvino(spec)
    core = _core()
    try:
        model = core.read_model(model=data)
    except RuntimeError as e:
        raise InvalidModelError(f"OpenVINO cannot read the model: {_first_line(e)}") from None
    dynamic = {p.get_any_name(): _static_shape(p, spec.batch) for p in model.inputs if p.get_partial_shape().is_dynamic}
    if dynamic:
        model.reshape(dynamic)
    try:
        return core.compile_model(model, OV_DEVICE, dict(spec.runtime_options))
    except RuntimeError as e:
        raise InvalidModelError(f"OpenVINO cannot compile the model: {_first_line(e)}") from None


def _static_shape(port: Any, batch: int) -> list[int]:
    dims = []
    for axis, d in enumerate(port.get_partial_shape()):
        if d.is_static:
            dims.append(d.get_length())
        elif axis == 0:
            dims.append(batch)
        else:
            raise InvalidModelError(
                f"input {port.get_any_name()!r} has a free dimension at axis {axis}; export with fixed shapes"
            )
    return dims


def _short(version: str) -> str:
    """2026.4.1-22982-e213a147257-releases/2026/4 -> 2026.4.1 (the fingerprint keeps it all)."""
    return version.split("-", 1)[0]


def _first_line(e: Exception) -> str:
    """OpenVINO's errors start with C++ source locations; keep the line that says what is wrong."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("Exception from ")]
    return lines[0] if lines else str(e).strip()


class OvRunnable:
    """One compiled model and its infer request, random inputs bound once."""

    def __init__(self, data: bytes, spec: DeviceSpec) -> None:
        ov = openvino(spec)
        self.compiled = compile_onnx(data, spec)
        ports = [(p.get_any_name(), list(p.get_shape()), p.get_element_type().to_dtype()) for p in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()
        for name, array in random_feeds(ports, spec.batch).items():
            self.request.set_tensor(name, ov.Tensor(array))

    def time_runs(self, n: int) -> list[float]:
        infer, clock = self.request.infer, time.perf_counter_ns
        out = []
        for _ in range(n):
            t0 = clock()
            infer()
            out.append((clock() - t0) / 1e6)
        return out

    def close(self) -> None:
        self.request = None
        self.compiled = None


class OpenVinoRuntime:
    name = "openvino"

    def check_options(self, options: dict[str, Any], source: str) -> dict[str, Any]:
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise DeviceError(f"{source} [openvino]: unknown keys {sorted(unknown)}; known: {sorted(OPTIONS)}")
        for key, value in options.items():
            _check_value(key, value, source)
        return {**DEFAULTS, **options}

    def status(self, spec: DeviceSpec | None = None) -> tuple[bool, str]:
        try:
            import openvino as ov
        except ImportError:
            return False, f"OpenVINO is not installed: {INSTALL}"
        if OV_DEVICE not in _core().available_devices:
            return False, f"OpenVINO {_short(ov.__version__)} has no {OV_DEVICE} device here"
        if spec is not None:
            hint = spec.runtime_options.get("INFERENCE_PRECISION_HINT")
            if unsupported_precision(spec.name, spec.runtime_options, capabilities()):
                return False, f"OpenVINO {_short(ov.__version__)}; no native {hint} on this CPU"
        return True, f"OpenVINO {_short(ov.__version__)}"

    def fingerprint(self, spec: DeviceSpec) -> dict[str, Any]:
        ov = openvino(spec)
        return {
            **cpu_info(),
            "openvino": ov.__version__,
            "openvino_device": OV_DEVICE,
            "openvino_config": dict(sorted(spec.runtime_options.items())),
        }

    def load(self, data: bytes, spec: DeviceSpec) -> OvRunnable:
        return OvRunnable(data, spec)

    def kernel_layout(self, data: bytes, spec: DeviceSpec) -> str | None:
        # OpenVINO runs every conv in its own channels-last blocked layout, whatever the channel
        # count (read from its runtime model): no per-kernel choice for the predictor to learn.
        return None

    def fused_groups(self, model: onnx.ModelProto, spec: DeviceSpec) -> list[list[int]]:
        from hwprofiler.runtimes.ov_fusion import node_groups, tag_nodes

        return node_groups(model, _executed_layers(tag_nodes(model).SerializeToString(), spec))


_LAYERS_CACHE: OrderedDict[tuple[Any, ...], list[tuple[str, list[str]]]] = OrderedDict()
_LAYERS_CACHE_SIZE = 64


def _executed_layers(data: bytes, spec: DeviceSpec) -> list[tuple[str, list[str]]]:
    """The ops OpenVINO executes for `data` compiled as the device says (`ov_fusion.executed_layers`),
    memoised per graph and settings: a kernel map asks for every pruned variant of a model."""
    from hwprofiler.runtimes.ov_fusion import executed_layers

    key = (hashlib.sha256(data).hexdigest(), tuple(sorted(spec.runtime_options.items())), spec.batch)
    hit = _LAYERS_CACHE.get(key)
    if hit is None:
        hit = _LAYERS_CACHE[key] = executed_layers(compile_onnx(data, spec))
        if len(_LAYERS_CACHE) > _LAYERS_CACHE_SIZE:
            _LAYERS_CACHE.popitem(last=False)
    _LAYERS_CACHE.move_to_end(key)
    return hit


RUNTIME = OpenVinoRuntime()
