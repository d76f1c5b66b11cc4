"""Live latency of ONNX models on a device: one model, or a model paired with a reference.

The method follows onnxruntime_perf_test (fixed threads, warm-up runs discarded, back-to-back
timed runs), spread over several short windows ("rounds") and read with the device policy's
estimator. Two models measured together alternate their windows A B B A A B ..., so a speed
mode or drift of a shared CPU slows both alike and cancels out of their ratio. Every runtime
(`hwprofiler.runtimes`) is measured by these same rules; the windows' lengths count the runs'
own time, which on the simulated device is simulated.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import onnx

from hwprofiler import stats
from hwprofiler.cache import MeasurementCache
from hwprofiler.devices import DeviceSpec, MeasurePolicy, load_device
from hwprofiler.fingerprint import fingerprint_id
from hwprofiler.measurement import Measurement, PairedMeasurement
from hwprofiler.runtimes import Runnable, get_runtime
from hwprofiler.validate import parse_model

T = TypeVar("T")

ModelLike = bytes | str | os.PathLike[str] | onnx.ModelProto
RUNS_PER_CALL = 16  # runs timed per call into the runtime while a window fills


def model_bytes(model: ModelLike) -> bytes:
    """The serialized model: the graph bytes that are hashed, cached and sent to a device."""
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    return Path(model).read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _window(runnable: Runnable, policy: MeasurePolicy) -> list[float]:
    """One round: at least `min_round_runs` runs and `round_s` seconds of them."""
    samples: list[float] = []
    spent_ms = 0.0
    while len(samples) < policy.max_round_runs:
        need = policy.min_round_runs - len(samples)
        if need <= 0 and spent_ms >= policy.round_s * 1e3:
            break
        n = max(need, 1)
        if spent_ms > 0 and len(samples):  # enough runs to fill the window, in a few calls
            n = max(n, min(RUNS_PER_CALL, int((policy.round_s * 1e3 - spent_ms) / (spent_ms / len(samples))) + 1))
        n = min(n, policy.max_round_runs - len(samples))
        part = runnable.time_runs(n)
        samples.extend(part)
        spent_ms += sum(part)
    return samples


def _warm(runnable: Runnable, policy: MeasurePolicy) -> float:
    """The first run's time (it holds one-off set-up costs), then `warmup` discarded runs."""
    first = runnable.time_runs(1)[0]
    if policy.warmup:
        runnable.time_runs(policy.warmup)
    return first


def _summarize(rounds: list[list[float]], policy: MeasurePolicy, first_ms: float | None) -> Measurement:
    s = sorted(x for r in rounds for x in r)
    per_round = [stats.estimate([r], policy.estimator) for r in rounds]
    fastest = min(per_round)
    return Measurement(
        latency_ms=stats.estimate(rounds, policy.estimator),
        estimator=policy.estimator,
        median_ms=stats.median(s),
        min_ms=s[0],
        p10_ms=stats.nearest_rank(s, 0.10),
        p90_ms=stats.nearest_rank(s, 0.90),
        n=len(s),
        rounds=len(rounds),
        round_spread=(max(per_round) - fastest) / fastest if fastest > 0 else 0.0,
        rel_ci=stats.median_rel_ci(s),
        first_run_ms=first_ms,
        samples=tuple(x for r in rounds for x in r),
    )


def measure_local(data: bytes, spec: DeviceSpec, policy: MeasurePolicy | None = None) -> Measurement:
    """Validate and time `data` on this host (no cache)."""
    parse_model(data)
    policy = policy or spec.policy
    runnable = get_runtime(spec.runtime).load(data, spec)
    try:
        first = _warm(runnable, policy)
        rounds = [_window(runnable, policy) for _ in range(policy.rounds)]
    finally:
        runnable.close()
    return _summarize(rounds, policy, first)


def abba_order(rounds: int) -> list[int]:
    """Which of two models (0 or 1) each window times: A B B A A B B A ... (2 * rounds windows).

    Each model gets `rounds` windows and, over every four, as many early as late slots, so a
    steady drift in the machine's speed adds the same to both."""
    pattern = (0, 1, 1, 0)
    return [pattern[i % 4] for i in range(2 * rounds)]


def measure_pair_local(data: bytes, reference: bytes, spec: DeviceSpec, policy: MeasurePolicy | None = None) -> PairedMeasurement:
    """Time `data` and `reference` interleaved (A B B A ...) on this host (no cache)."""
    parse_model(data)
    parse_model(reference)
    policy = policy or spec.policy
    runtime = get_runtime(spec.runtime)
    runnables = [runtime.load(data, spec), runtime.load(reference, spec)]
    try:
        firsts = [_warm(r, policy) for r in runnables]
        rounds: list[list[list[float]]] = [[], []]
        for which in abba_order(policy.rounds):
            rounds[which].append(_window(runnables[which], policy))
    finally:
        for r in runnables:
            r.close()
    a, b = (_summarize(rounds[i], policy, firsts[i]) for i in (0, 1))
    per_pair = tuple(
        stats.estimate([ra], policy.estimator) / stats.estimate([rb], policy.estimator) for ra, rb in zip(rounds[0], rounds[1])
    )
    return PairedMeasurement(model=a, reference=b, ratio=a.latency_ms / b.latency_ms, round_ratios=per_pair)


def _resolve_cache(cache: MeasurementCache | bool | None) -> MeasurementCache | None:
    if cache is True:
        return MeasurementCache()
    return cache or None


def _usable(record: dict | None, estimator: str, not_before: float | None) -> bool:
    if record is None:
        return False
    model = record.get("model")
    if record.get("estimator", model.get("estimator") if isinstance(model, dict) else None) != estimator:
        return False  # records taken with another estimator are never mixed in
    try:
        measured_at = float(record.get("measured_at") or 0.0)
    except (TypeError, ValueError):
        return False
    return not_before is None or measured_at >= not_before


def _from_cache(
    store: MeasurementCache, key: tuple[str, str], estimator: str, not_before: float | None, parse: Callable[[dict], T]
) -> T | None:
    """The cached record under `key` parsed, when it is usable; a record that cannot be parsed is
    discarded (measured again and overwritten) with a warning naming its file."""
    record = store.get(*key)
    if not _usable(record, estimator, not_before):
        return None
    try:
        return parse(record)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        store.discard(*key)
        return None


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
    replace the cached record). `not_before` (a `time.time()` value) refreshes only records
    taken before it, so a search compares its reference with times taken since. `policy`
    overrides the device's (local devices only: a remote profiler measures with its own policy).
    """
    spec = load_device(device)
    data = model_bytes(model)
    store = _resolve_cache(cache)
    estimator = (policy or spec.policy).estimator
    key = None
    if store is not None:
        key = (fingerprint_id(spec), sha256(data))
        if not refresh:
            hit = _from_cache(
                store, key, estimator, not_before, lambda r: Measurement.from_dict(r, cached=True, samples=keep_samples)
            )
            if hit is not None:
                return hit
    if spec.is_remote:
        from hwprofiler.client import client_for

        result = client_for(spec).measure(data, samples=True)
    else:
        result = measure_local(data, spec, policy)
    if store is not None and key is not None:
        store.put(*key, result.to_dict(samples=True) | {"measured_at": time.time()})
    return result if keep_samples else replace(result, samples=None)


def measure_paired(
    model: ModelLike,
    reference: ModelLike,
    device: DeviceSpec | str = "ort-cpu-1t",
    *,
    policy: MeasurePolicy | None = None,
    cache: MeasurementCache | bool | None = True,
    not_before: float | None = None,
) -> PairedMeasurement:
    """Measure `model` interleaved with `reference` on a device; `ratio` is model / reference.

    Cached under the pair's two digests like `measure_onnx`, with the same `not_before` rule.
    """
    spec = load_device(device)
    data, ref = model_bytes(model), model_bytes(reference)
    store = _resolve_cache(cache)
    estimator = (policy or spec.policy).estimator
    key = None
    if store is not None:
        key = (fingerprint_id(spec), sha256((sha256(data) + sha256(ref)).encode()))
        pair = _from_cache(store, key, estimator, not_before, lambda r: PairedMeasurement.from_dict(r, cached=True))
        if pair is not None:
            return pair
    if spec.is_remote:
        from hwprofiler.client import client_for

        result = client_for(spec).measure_pair(data, ref)
    else:
        result = measure_pair_local(data, ref, spec, policy)
    if store is not None and key is not None:
        store.put(*key, result.to_dict() | {"measured_at": time.time()})
    return result


__all__ = [
    "Measurement",
    "PairedMeasurement",
    "abba_order",
    "measure_local",
    "measure_onnx",
    "measure_pair_local",
    "measure_paired",
    "model_bytes",
    "sha256",
]
