"""Fidelity of the LUT predictor: random policies measured live vs predicted.

The overhead model is fitted only on calibration policies (4 uniform, 8 random from a separate
stream), never on the random policies it is judged on, so the numbers say how the predictor
does on unseen ones.
"""

from __future__ import annotations

import random
import time
from typing import Any

from tqdm.auto import tqdm

import hwprofiler
from hwprofiler import LUT, FlopsPredictor, Predictor, fidelity

from .export import to_onnx_bytes
from .kernel_map import KernelMap
from .models import ModelSpec
from .surgery import Surgeon

CALIBRATION_RATIOS = (0.0, 0.25, 0.5, 0.75)
CALIBRATION_RANDOM = 8


def _export(surgeon: Surgeon, spec: ModelSpec, ratios: list[float], round_to: int, max_ratio: float) -> bytes:
    pruned = surgeon.apply(surgeon.policy(ratios, round_to=round_to, max_ratio=max_ratio), count=False).model
    return to_onnx_bytes(pruned, spec.input_shape)


def check_fidelity(
    spec: ModelSpec,
    device_name: str,
    samples: int = 50,
    seed: int = 0,
    max_ratio: float = 0.9,
    round_to: int = 1,
    progress: bool = True,
    repeat_live: bool = True,
) -> dict[str, Any]:
    """Measure `samples` random policies live and compare the LUT and FLOPs predictors.

    With `repeat_live`, every judged policy is measured live a second time (no cache): how well
    live agrees with itself is the ceiling any predictor can reach on this machine right now.
    """
    start = time.perf_counter()
    device = hwprofiler.load_device(device_name)
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon, batch=device.batch, device=device)
    lut = LUT(device)
    n_groups = len(surgeon.groups)
    rng = random.Random(seed)
    policies = [[rng.uniform(0.0, max_ratio) for _ in range(n_groups)] for _ in range(samples)]
    # Calibration: uniform policies plus random ones from another stream, so the overhead model
    # sees the mix of aligned and odd channel counts that searches produce.
    calib_rng = random.Random(seed + 10_007)
    calib = [[min(r, max_ratio)] * n_groups for r in CALIBRATION_RATIOS]
    calib += [[calib_rng.uniform(0.0, max_ratio) for _ in range(n_groups)] for _ in range(CALIBRATION_RANDOM)]
    todo = calib + policies
    lut.fill([k for ratios in todo for k in kmap.kernels_for(ratios, round_to)], progress=progress)
    # A predictor fitted on this check's calibration points only; the table's own are put back.
    saved_observations, lut.observations = lut.observations, []
    predictor = Predictor(lut)
    live, pred, flops_kernels, graphs = [], [], [], []
    bar = tqdm(total=len(todo), desc="live runs", disable=not progress)
    for i, ratios in enumerate(todo):
        data = _export(surgeon, spec, ratios, round_to, max_ratio)
        # Measured now, never read from the disk cache: a cached time was taken under other load,
        # and comparing it with a fresh one judges the machine's drift, not the predictor.
        live_ms = hwprofiler.measure_onnx(data, device, cache=False).latency_ms
        kernels = kmap.kernels_for(ratios, round_to)
        if i < len(calib):
            predictor.observe(kernels, live_ms, save=False)
        else:
            live.append(live_ms)
            pred.append(predictor.predict(kernels))
            flops_kernels.append(hwprofiler.device_kernels(data, device))
            graphs.append(data)
        bar.update(1)
    bar.close()
    repeat = None
    if repeat_live:
        again = [
            hwprofiler.measure_onnx(g, device, cache=False).latency_ms
            for g in tqdm(graphs, desc="live again", disable=not progress)
        ]
        repeat = fidelity(again, live)
    flops = FlopsPredictor.fit(lut.observations)
    flops_pred = [flops.predict(k) for k in flops_kernels]
    ours, base = fidelity(pred, live), fidelity(flops_pred, live)
    lut.observations = saved_observations
    return {
        "model": spec.name,
        "device": device.name,
        "samples": samples,
        "seed": seed,
        "within_10pct": ours["within_10pct"],
        "mape": ours["mape"],
        "kendall_tau": ours["kendall_tau"],
        "flops_within_10pct": base["within_10pct"],
        "flops_mape": base["mape"],
        "flops_kendall_tau": base["kendall_tau"],
        "live_repeat_within_10pct": repeat["within_10pct"] if repeat else None,
        "live_repeat_kendall_tau": repeat["kendall_tau"] if repeat else None,
        "overhead": predictor.coefficients,
        "lut_entries": len(lut),
        "live_ms": live,
        "predicted_ms": pred,
        "flops_predicted_ms": flops_pred,
        "wall_s": time.perf_counter() - start,
    }
