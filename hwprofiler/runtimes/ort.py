"""onnxruntime as a device runtime: sessions configured exactly as the device spec says."""

from __future__ import annotations

import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from hwprofiler.cpu import cpu_info
from hwprofiler.errors import DeviceError, InvalidModelError

if TYPE_CHECKING:
    import onnx

    from hwprofiler.devices import DeviceSpec

_OPT_LEVEL_NAMES = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def make_session(data: bytes, spec: DeviceSpec, optimized_model_path: str | None = None, profile: bool = False) -> Any:
    """An InferenceSession configured exactly as the spec says (and nothing else: no custom ops)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in spec.providers if p not in available]
    if missing:
        raise DeviceError(f"device {spec.name} needs {missing}, but this onnxruntime only has {available}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = spec.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVEL_NAMES[spec.graph_optimization_level])
    so.log_severity_level = 3
    for key, value in spec.session_config.items():
        so.add_session_config_entry(key, value)
    if optimized_model_path:
        so.optimized_model_filepath = optimized_model_path
    if profile:
        so.enable_profiling = True
    options = [dict(o) for o in spec.provider_options] or None
    try:
        return ort.InferenceSession(data, sess_options=so, providers=list(spec.providers), provider_options=options)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InvalidModelError(f"onnxruntime cannot load the model: {str(e).strip()}") from None


def random_feeds(inputs: list[tuple[str, list[Any], Any]], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for (name, shape, type) triples, the type an onnx type name ("tensor(float)")
    or a numpy dtype; a free leading dimension becomes the batch."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, dims, type_name in inputs:
        shape = []
        for i, dim in enumerate(dims):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif i == 0:
                shape.append(batch)
            else:
                raise InvalidModelError(f"input {name!r} has a free dimension {dim!r} at axis {i}; export with fixed shapes")
        dtype = _NP_TYPES.get(type_name) if isinstance(type_name, str) else _np_dtype(type_name)
        if dtype is None:
            raise InvalidModelError(f"input {name!r} has unsupported type {type_name}")
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds


def _np_dtype(value: Any) -> Any:
    """A numpy dtype of the kinds a model input may have, else None."""
    try:
        dtype = np.dtype(value).type
    except TypeError:
        return None
    return dtype if dtype in _NP_TYPES.values() else None


def session_feeds(session: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of an onnxruntime session's declared shapes."""
    return random_feeds([(i.name, list(i.shape), i.type) for i in session.get_inputs()], batch, seed)


NCHWC_DOMAIN = "com.microsoft.nchwc"
_REORDERS = ("ReorderInput", "ReorderOutput")


def optimized_graph(data: bytes, spec: DeviceSpec) -> Any:
    """The graph onnxruntime runs for `data` under the spec's settings (its optimizer's output)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="hwprofiler-opt-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        make_session(data, spec, optimized_model_path=path)
        return onnx.load(path).graph


def nchwc_layout(data: bytes, spec: DeviceSpec) -> str:
    """ "blocked" when onnxruntime runs the graph's compute in its NCHWc layout, else "plain"."""
    compute = [n for n in optimized_graph(data, spec).node if n.op_type not in _REORDERS]
    return "blocked" if any(n.domain == NCHWC_DOMAIN for n in compute) else "plain"


def nchwc_block(spec: DeviceSpec) -> int | None:
    """onnxruntime's NCHWc channel block on this CPU, detected: the smallest channel count whose
    max-pool it runs blocked (pools need whole blocks). None when it never runs one blocked."""
    from hwprofiler.kernels import KernelSpec, build_kernel_model

    for c in (4, 8, 16, 32, 64):
        k = KernelSpec(op="maxpool", cin=c, cout=c, kernel=2, stride=2, h=8, w=8)
        if nchwc_layout(build_kernel_model(k).SerializeToString(), spec) == "blocked":
            return c
    return None


class OrtRunnable:
    def __init__(self, data: bytes, spec: DeviceSpec) -> None:
        self.session = make_session(data, spec)
        self.feeds = session_feeds(self.session, spec.batch)

    def time_runs(self, n: int) -> list[float]:
        run, feeds, clock = self.session.run, self.feeds, time.perf_counter_ns
        out = []
        for _ in range(n):
            t0 = clock()
            run(None, feeds)
            out.append((clock() - t0) / 1e6)
        return out

    def close(self) -> None:
        self.session = None


class OnnxRuntime:
    name = "onnxruntime"

    def check_options(self, options: dict[str, Any], source: str) -> dict[str, Any]:
        return {}  # its settings are the spec's own fields (providers, threads, ...)

    def status(self, spec: DeviceSpec | None = None) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed: pip install onnxruntime"
        return True, f"onnxruntime {ort.__version__}"

    def fingerprint(self, spec: DeviceSpec) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            **cpu_info(),
            "onnxruntime": ort.__version__,
            "providers": list(spec.providers),
            "provider_options": [dict(o) for o in spec.provider_options],
            "intra_op_threads": spec.intra_op_threads,
            "graph_optimization_level": spec.graph_optimization_level,
            "session_config": dict(sorted(spec.session_config.items())),
        }

    def load(self, data: bytes, spec: DeviceSpec) -> OrtRunnable:
        return OrtRunnable(data, spec)

    def kernel_layout(self, data: bytes, spec: DeviceSpec) -> str | None:
        return nchwc_layout(data, spec)

    def fused_groups(self, model: onnx.ModelProto, spec: DeviceSpec) -> list[list[int]]:
        from hwprofiler.onnx_kernels import onnxruntime_groups

        return onnxruntime_groups(model)


RUNTIME = OnnxRuntime()
