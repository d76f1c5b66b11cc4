"""Live latency measurement of an ONNX model with onnxruntime.

The method follows onnxruntime_perf_test: fixed thread count, sequential executor, warm-up runs
discarded, then back-to-back timed runs.  Instead of a fixed count we stop once the median is
known to `target_rel_ci` (order-statistic 95% CI), or a time/repeat cap is reached, so cheap
kernels finish fast and noisy hosts get more samples.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from hwprofiler import stats
from hwprofiler.cache import MeasurementCache
from hwprofiler.devices import DeviceSpec, MeasurePolicy, load_device
from hwprofiler.errors import DeviceError, InvalidModelError
from hwprofiler.fingerprint import fingerprint_id
from hwprofiler.validate import parse_model

ModelLike = bytes | str | os.PathLike[str] | onnx.ModelProto

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
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class Measurement:
    """Latency statistics of one model on one device, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    n: int
    rel_ci: float  # half-width of the median's 95% CI / median
    stop_reason: str = ""  # "ci", "time_cap" or "max_repeats"
    first_run_ms: float | None = None
    samples: tuple[float, ...] | None = field(default=None, repr=False)
    cached: bool = False

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "median_ms": self.median_ms,
            "p10_ms": self.p10_ms,
            "p90_ms": self.p90_ms,
            "n": self.n,
            "rel_ci": self.rel_ci if math.isfinite(self.rel_ci) else None,
            "stop_reason": self.stop_reason,
            "first_run_ms": self.first_run_ms,
        }
        if samples and self.samples is not None:
            d["samples"] = list(self.samples)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, cached: bool = False, samples: bool = True) -> Measurement:
        s = d.get("samples") if samples else None
        return cls(
            median_ms=float(d["median_ms"]),
            p10_ms=float(d["p10_ms"]),
            p90_ms=float(d["p90_ms"]),
            n=int(d["n"]),
            rel_ci=math.inf if d.get("rel_ci") is None else float(d["rel_ci"]),
            stop_reason=str(d.get("stop_reason", "")),
            first_run_ms=d.get("first_run_ms"),
            samples=tuple(float(x) for x in s) if s is not None else None,
            cached=cached,
        )


def model_bytes(model: ModelLike) -> bytes:
    """The serialized model: the graph bytes that are hashed, cached and sent to a device."""
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    return Path(model).read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_session(data: bytes, spec: DeviceSpec, optimized_model_path: str | None = None) -> Any:
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
    options = [dict(o) for o in spec.provider_options] or None
    try:
        return ort.InferenceSession(data, sess_options=so, providers=list(spec.providers), provider_options=options)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InvalidModelError(f"onnxruntime cannot load the model: {str(e).strip()}") from None


def random_feeds(session: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the declared shapes; a free leading dimension becomes the batch size."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = []
        for i, dim in enumerate(inp.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif i == 0:
                shape.append(batch)
            else:
                raise InvalidModelError(f"input {inp.name!r} has a free dimension {dim!r} at axis {i}; export with fixed shapes")
        dtype = _NP_TYPES.get(inp.type)
        if dtype is None:
            raise InvalidModelError(f"input {inp.name!r} has unsupported type {inp.type}")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


def time_session(session: Any, feeds: dict[str, np.ndarray], policy: MeasurePolicy) -> Measurement:
    """Warm up, then time back-to-back runs until the policy's stopping rule fires.

    Warm-up stops early after half the time cap, so a slow model still gets timed runs.
    """
    t0 = time.perf_counter_ns()
    session.run(None, feeds)
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    warm_until = time.perf_counter() + policy.time_cap_s / 2
    for _ in range(policy.warmup):
        if time.perf_counter() >= warm_until:
            break
        session.run(None, feeds)
    samples: list[float] = []
    start = time.perf_counter()
    reason = "max_repeats"
    while len(samples) < policy.max_repeats:
        t0 = time.perf_counter_ns()
        session.run(None, feeds)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        n = len(samples)
        if time.perf_counter() - start >= policy.time_cap_s:
            reason = "time_cap"
            break
        if n >= policy.min_repeats and (n - policy.min_repeats) % 5 == 0 and time.perf_counter() - start >= policy.min_time_s:
            if stats.median_rel_ci(sorted(samples)) <= policy.target_rel_ci:
                reason = "ci"
                break
    s = sorted(samples)
    return Measurement(
        median_ms=stats.median(s),
        p10_ms=stats.nearest_rank(s, 0.10),
        p90_ms=stats.nearest_rank(s, 0.90),
        n=len(s),
        rel_ci=stats.median_rel_ci(s),
        stop_reason=reason,
        first_run_ms=first_ms,
        samples=tuple(samples),
    )


def measure_local(data: bytes, spec: DeviceSpec, policy: MeasurePolicy | None = None) -> Measurement:
    """Validate and time `data` on this host (no cache), in `policy.sessions` fresh sessions."""
    parse_model(data)
    policy = policy or spec.policy
    runs = []
    for _ in range(policy.sessions):
        session = make_session(data, spec)
        runs.append(time_session(session, random_feeds(session, spec.batch), policy))
        del session
    return runs[0] if len(runs) == 1 else combine_sessions(runs)


def combine_sessions(runs: list[Measurement]) -> Measurement:
    """The median of the sessions' medians; percentiles and the CI over all their samples."""
    pooled = sorted(x for r in runs for x in (r.samples or ()))
    return Measurement(
        median_ms=stats.median(sorted(r.median_ms for r in runs)),
        p10_ms=stats.nearest_rank(pooled, 0.10),
        p90_ms=stats.nearest_rank(pooled, 0.90),
        n=len(pooled),
        rel_ci=stats.median_rel_ci(pooled),
        stop_reason=runs[-1].stop_reason,
        first_run_ms=runs[0].first_run_ms,
        samples=tuple(x for r in runs for x in (r.samples or ())),
    )


def _resolve_cache(cache: MeasurementCache | bool | None) -> MeasurementCache | None:
    if cache is True:
        return MeasurementCache()
    return cache or None


def measure_onnx(
    model: ModelLike,
    device: DeviceSpec | str = "ort-cpu-1t",
    *,
    policy: MeasurePolicy | None = None,
    cache: MeasurementCache | bool | None = True,
    keep_samples: bool = False,
    refresh: bool = False,
    not_before: float | None = None,
) -> Measurement:
    """Measure a model's latency on a device (built-in name, TOML path, `remote:` URL or spec).

    Results are cached on disk under (fingerprint id, sha256 of the model bytes); a hit returns
    `Measurement(cached=True)` without running anything, unless `refresh` (measure now and
    replace the cached record: a reference that later numbers are compared with should be
    taken under the machine's present load).  `not_before` (a `time.time()` value) refreshes
    only cached records taken before it (or with no time): a search that measured its reference
    at that moment compares it with times taken since, never with ones from an earlier load or
    speed mode.  `policy` overrides the device's (local devices only: a remote profiler measures
    with its own policy).
    """
    spec = load_device(device)
    data = model_bytes(model)
    store = _resolve_cache(cache)
    key = None
    if store is not None:
        key = (fingerprint_id(spec), sha256(data))
        record = None if refresh else store.get(*key)
        if record is not None and not_before is not None and float(record.get("measured_at") or 0.0) < not_before:
            record = None
        if record is not None:
            return Measurement.from_dict(record, cached=True, samples=keep_samples)
    if spec.is_remote:
        from hwprofiler.client import client_for

        result = client_for(spec).measure(data, samples=True)
    else:
        result = measure_local(data, spec, policy)
    if store is not None and key is not None:
        store.put(*key, result.to_dict(samples=True) | {"measured_at": time.time()})
    return result if keep_samples else replace(result, samples=None)
