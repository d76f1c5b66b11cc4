"""Fidelity of the LUT predictor: random policies measured live vs predicted.

The predictor is calibrated the way a search calibrates it on a new device (`hilprune.calibrate`:
at most `CALIBRATION_RUNS` live runs of uniform and random policies from their own seeded stream),
never on the random policies it is judged on, so the numbers say how it does on unseen ones.
Every judged policy is measured live twice, minutes apart: how well live agrees with itself is the
ceiling any predictor can reach on the machine at that time.
"""

from __future__ import annotations

import random
import time
from typing import Any

from tqdm.auto import tqdm

import hwprofiler
from hwprofiler import FlopsPredictor, Predictor, fidelity

from .calibrate import CALIBRATION_RUNS, calibrate, model_scope
from .export import to_onnx_bytes
from .kernel_map import KernelMap
from .models import ModelSpec
from .policy import groups_signature
from .surgery import Surgeon


def _export(surgeon: Surgeon, spec: ModelSpec, ratios: list[float], round_to: int, max_ratio: float, batch: int) -> bytes:
    pruned = surgeon.apply(surgeon.policy(ratios, round_to=round_to, max_ratio=max_ratio), count=False).model
    return to_onnx_bytes(pruned, spec.input_shape, batch)


def _ablation(predictor: Predictor, kernels: list[list[Any]], live: list[float]) -> dict[str, Any]:
    """The same judged policies priced by simpler corrections fitted on the same calibration runs:
    the bare kernel sum, one scale for every kernel class (with the same extra terms), and the
    correction chosen without the MACs term; what the per-class, per-layout correction and the
    MACs term earn over them."""
    from hwprofiler.predictor import fit_correction

    points = predictor.lut.observations
    one_class = [p | {"class_ms": {"all": p["sum_ms"]}} for p in points]
    single = fit_correction(one_class, predictor.prior_weight)
    no_macs = fit_correction([{k: v for k, v in p.items() if k != "macs"} for p in points], predictor.prior_weight)
    feats = [predictor.features(ks) for ks in kernels]
    return {
        "kernel_sum": fidelity([f["sum_ms"] for f in feats], live),
        "one_scale": fidelity([single.predict(f | {"class_ms": {"all": f["sum_ms"]}}) for f in feats], live),
        "no_macs": fidelity([no_macs.price(f) for f in feats], live) | {"model": no_macs.model},
    }


def check_fidelity(
    spec: ModelSpec,
    device_name: str,
    samples: int = 50,
    seed: int = 0,
    max_ratio: float = 0.9,
    round_to: int = 1,
    progress: bool = True,
    repeat_live: bool = True,
    calibration_runs: int = CALIBRATION_RUNS,
) -> dict[str, Any]:
    """Calibrate, then measure `samples` random policies live and compare the LUT and FLOPs
    predictors with them, and (with `repeat_live`) live with itself."""
    start = time.perf_counter()
    device = hwprofiler.load_device(device_name)
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon, batch=device.batch, device=device)
    lut = hwprofiler.open_lut(device)
    n_groups = len(surgeon.groups)
    rng = random.Random(seed)
    policies = [[rng.uniform(0.0, max_ratio) for _ in range(n_groups)] for _ in range(samples)]
    # A predictor fitted on this check's own calibration only; the table's observations are put back.
    saved_observations, lut.observations = lut.observations, []
    entries_before = len(lut)
    try:
        scope = model_scope(spec.name, spec.input_shape, groups_signature(surgeon.groups)) + f"|check-r{round_to}"
        predictor = Predictor(lut, scope=scope)
        t_cal = time.perf_counter()
        calibrate(
            surgeon, device, predictor, kmap=kmap, runs=calibration_runs, max_ratio=max_ratio, round_to=round_to,
            seed=seed, progress=progress,
        )  # fmt: skip
        calibration_s = time.perf_counter() - t_cal
        kernels = [kmap.kernels_for(r, round_to) for r in policies]
        lut.fill([k for ks in kernels for k in ks], progress=progress)
        live, pred, graphs = [], [], []
        for ratios, ks in tqdm(list(zip(policies, kernels)), desc="live runs", disable=not progress):
            data = _export(surgeon, spec, ratios, round_to, max_ratio, device.batch)
            # Measured now, never read from the disk cache: a cached time was taken under other load.
            live.append(hwprofiler.measure_onnx(data, device, cache=False).latency_ms)
            pred.append(predictor.predict(ks))
            graphs.append(data)
        repeat = None
        if repeat_live:
            again = [
                hwprofiler.measure_onnx(g, device, cache=False).latency_ms
                for g in tqdm(graphs, desc="live again", disable=not progress)
            ]
            repeat = fidelity(again, live)
        flops = FlopsPredictor.fit(lut.observations)
        flops_pred = [flops.predict(ks) for ks in kernels]
        ours, base = fidelity(pred, live), fidelity(flops_pred, live)
        ablation = _ablation(predictor, kernels, live)
        dense_live = float(lut.observations[0]["live_ms"])  # the first calibration policy is the dense model
        dense_pred = predictor.predict(kmap.kernels_for([0.0] * n_groups, round_to))
        slower = [(y > dense_live, p > dense_pred) for y, p in zip(live, pred)]
        coefficients = predictor.coefficients
        n_calibration = len(lut.observations)
    finally:
        lut.observations = saved_observations
    lut.save()
    return {
        "model": spec.name,
        "device": device.name,
        "samples": samples,
        "seed": seed,
        "round_to": round_to,
        "estimator": device.policy.estimator,
        "within_5pct": ours["within_5pct"],
        "within_10pct": ours["within_10pct"],
        "mape": ours["mape"],
        "kendall_tau": ours["kendall_tau"],
        "flops_within_10pct": base["within_10pct"],
        "flops_mape": base["mape"],
        "flops_kendall_tau": base["kendall_tau"],
        "live_repeat_within_5pct": repeat["within_5pct"] if repeat else None,
        "live_repeat_within_10pct": repeat["within_10pct"] if repeat else None,
        "live_repeat_kendall_tau": repeat["kendall_tau"] if repeat else None,
        "ablation": ablation,
        "slower_than_dense_live": sum(a for a, _ in slower),
        "slower_than_dense_agree": sum(a == b for a, b in slower),
        "calibration_runs": n_calibration,
        "calibration_s": calibration_s,
        "lut_kernels_measured": len(lut) - entries_before,
        "overhead": coefficients,
        "lut_entries": len(lut),
        "live_ms": live,
        "live_again_ms": again if repeat_live else None,
        "predicted_ms": pred,
        "flops_predicted_ms": flops_pred,
        "wall_s": time.perf_counter() - start,
    }
