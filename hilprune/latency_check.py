"""Fidelity of the LUT predictor: random policies measured live vs predicted.

The overhead model is fitted only on calibration policies (uniform ratios), never on the
random policies it is judged on, so the numbers say how the predictor does on unseen ones.
"""
from __future__ import annotations

import random
import time
from typing import Any

import hwprofiler
from hwprofiler import LUT, FlopsPredictor, Predictor, fidelity
from tqdm.auto import tqdm

from .export import to_onnx_bytes
from .kernel_map import KernelMap
from .models import ModelSpec
from .surgery import Surgeon

CALIBRATION_RATIOS = (0.0, 0.25, 0.5, 0.75)


def _live(surgeon: Surgeon, spec: ModelSpec, ratios: list[float], device: Any, round_to: int, max_ratio: float) -> tuple[float, list]:
    pruned = surgeon.apply(surgeon.policy(ratios, round_to=round_to, max_ratio=max_ratio), count=False).model
    data = to_onnx_bytes(pruned, spec.input_shape)
    return hwprofiler.measure_onnx(data, device).median_ms, hwprofiler.kernels_from_onnx(data)


def check_fidelity(spec: ModelSpec, device_name: str, samples: int = 50, seed: int = 0, max_ratio: float = 0.9,
                   round_to: int = 1, progress: bool = True) -> dict[str, Any]:
    """Measure `samples` random policies live and compare the LUT and FLOPs predictors."""
    start = time.perf_counter()
    device = hwprofiler.load_device(device_name)
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon, batch=device.batch)
    lut = LUT(device)
    n_groups = len(surgeon.groups)
    rng = random.Random(seed)
    policies = [[rng.uniform(0.0, max_ratio) for _ in range(n_groups)] for _ in range(samples)]
    calib = [[min(r, max_ratio)] * n_groups for r in CALIBRATION_RATIOS]
    todo = calib + policies
    lut.fill([k for ratios in todo for k in kmap.kernels_for(ratios, round_to)], progress=progress)
    # A predictor fitted on this check's calibration points only; the table's own are put back.
    saved_observations, lut.observations = lut.observations, []
    predictor = Predictor(lut)
    live, pred, flops_kernels = [], [], []
    bar = tqdm(total=len(todo), desc="live runs", disable=not progress)
    for i, ratios in enumerate(todo):
        live_ms, real_kernels = _live(surgeon, spec, ratios, device, round_to, max_ratio)
        kernels = kmap.kernels_for(ratios, round_to)
        if i < len(calib):
            predictor.observe(kernels, live_ms, save=False)
        else:
            live.append(live_ms)
            pred.append(predictor.predict(kernels))
            flops_kernels.append(real_kernels)
        bar.update(1)
    bar.close()
    flops = FlopsPredictor.fit(lut.observations)
    flops_pred = [flops.predict(k) for k in flops_kernels]
    ours, base = fidelity(pred, live), fidelity(flops_pred, live)
    lut.observations = saved_observations
    return {
        "model": spec.name, "device": device.name, "samples": samples, "seed": seed,
        "within_10pct": ours["within_10pct"], "mape": ours["mape"], "kendall_tau": ours["kendall_tau"],
        "flops_within_10pct": base["within_10pct"], "flops_mape": base["mape"], "flops_kendall_tau": base["kendall_tau"],
        "overhead": predictor.coefficients, "lut_entries": len(lut), "live_ms": live, "predicted_ms": pred,
        "flops_predicted_ms": flops_pred, "wall_s": time.perf_counter() - start,
    }
