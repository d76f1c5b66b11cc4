"""Calibrate a device's latency predictor for one model: a handful of live runs of pruned variants.

The predictor (hwprofiler.Predictor) learns how the device runs whole networks from live
measurements of them. A new device, or a model the device has not run yet, gets `CALIBRATION_RUNS`
of them here: the dense model, uniform policies and random ones (the mix of widths a search
produces), each exported, measured live and fed to the predictor. The observations are saved with
the device's LUT, so this happens once per device and model (`hilprune lut build` does it ahead of
time), and every live measurement a search takes afterwards keeps refining the fit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from hwprofiler import DeviceSpec, Predictor, measure_onnx

from .export import to_onnx_bytes
from .kernel_map import KernelMap
from .surgery import Surgeon

CALIBRATION_RUNS = 30  # live runs per device and model: at most this many, as the latency issue asks
UNIFORM = (0.0, 0.25, 0.5, 0.75)  # of max_ratio


def model_scope(name: str, input_shape: Sequence[int], groups_signature: str) -> str:
    """The scope a model's observations are filed under in the device's LUT."""
    return f"{name}|{','.join(str(int(d)) for d in input_shape)}|{groups_signature}"


def calibration_policies(n_groups: int, n: int, max_ratio: float, seed: int = 0) -> list[list[float]]:
    """`n` policies: uniform ones first (dense included), then random ones from a seeded stream."""
    policies = [[u * max_ratio] * n_groups for u in UNIFORM][:n]
    rng = random.Random(seed + 10_007)
    while len(policies) < n:
        policies.append([rng.uniform(0.0, max_ratio) for _ in range(n_groups)])
    return policies


def own_observations(predictor: Predictor) -> int:
    """How many live observations of the predictor's scope its LUT holds."""
    return sum(1 for o in predictor.lut.observations if o.get("scope") == predictor.scope)


def calibrate(
    surgeon: Surgeon,
    device: DeviceSpec,
    predictor: Predictor,
    *,
    kmap: KernelMap | None = None,
    runs: int = CALIBRATION_RUNS,
    max_ratio: float = 0.9,
    round_to: int = 1,
    seed: int = 0,
    progress: bool = True,
    lock: Any = None,
    transform: Callable[[bytes], bytes] | None = None,
    live: Callable[[bytes], float] | None = None,
) -> int:
    """Measure live until the predictor's scope has `runs` observations; returns how many were taken.

    `lock` (a context manager factory) is held around each live run, so two processes sharing the
    device do not time at once. `transform` turns each exported graph into the one to run (e.g.
    its INT8 form; `kmap` then maps the transformed graphs). `live`: a graph's latency in the
    predictor's frame (default: `measure_onnx`'s, in ms)."""
    todo = runs - own_observations(predictor)
    if todo <= 0:
        return 0
    from tqdm.auto import tqdm

    from hwprofiler import kernels_from_onnx

    input_shape = tuple(surgeon.example.shape[1:])
    policies = calibration_policies(len(surgeon.groups), runs, max_ratio, seed)[runs - todo :]
    what = f"calibrating {device.name}" + (f" ({predictor.scope.rsplit('|', 1)[-1]})" if transform is not None else "")
    bar = tqdm(policies, desc=what, unit="run", disable=not progress, leave=False)

    def measure(data: bytes) -> float:
        return float(live(data) if live is not None else measure_onnx(data, device, cache=False).latency_ms)

    for ratios in bar:
        policy = surgeon.policy(ratios, round_to=round_to, max_ratio=max_ratio)
        data = to_onnx_bytes(surgeon.apply(policy, count=False).model, input_shape, device.batch)  # type: ignore[arg-type]
        if transform is not None:
            data = transform(data)
        kernels = kmap.kernels(list(policy.key())) if kmap is not None else kernels_from_onnx(data, batch=device.batch)
        predictor.lut.fill(kernels, progress=False, save=False)
        if lock is not None:
            with lock():
                ms = measure(data)
        else:
            ms = measure(data)
        predictor.observe(kernels, ms, save=False, refit=False)
    predictor.refit()  # once, on every run (the same correction as refitting after each)
    predictor.lut.save()
    return todo
