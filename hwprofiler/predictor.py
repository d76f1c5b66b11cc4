"""Network latency from kernel latencies, corrected by a per-device overhead model.

Summing single-kernel measurements is biased: each one includes a session Run() overhead and,
on blocked-layout (NCHWc) CPUs, layout reorders that a whole network does not pay between
kernels, and it misses what fusion across kernels saves.  So the prediction is
`a * sum + b * n_kernels + c`, fitted by least squares on relative error to every live
measurement observed so far (stored in the LUT), shrunk toward `(1, 0, 0)` while few are known.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from hwprofiler import stats
from hwprofiler.kernels import KernelSpec
from hwprofiler.lut import LUT
from hwprofiler.onnx_kernels import kernels_from_onnx

PRIOR = (1.0, 0.0, 0.0)


def fit_overhead(points: Sequence[dict[str, Any]], prior_weight: float = 0.1) -> tuple[float, float, float]:
    """Weighted ridge fit of live_ms ~ a*sum_ms + b*n_kernels + c (residuals relative to live_ms)."""
    if not points:
        return PRIOR
    s = np.array([p["sum_ms"] for p in points], dtype=float)
    n = np.array([p["n_kernels"] for p in points], dtype=float)
    y = np.array([p["live_ms"] for p in points], dtype=float)
    X = np.stack([s, n, np.ones_like(s)], axis=1) / y[:, None]
    t = np.ones_like(y)
    # Prior rows, each scaled to what one unit of the coefficient does to a relative residual.
    lam = prior_weight
    P = lam * np.diag([float(np.mean(s / y)), float(np.mean(n / y)), float(np.mean(1 / y))])
    X = np.vstack([X, P])
    t = np.concatenate([t, P @ np.array(PRIOR)])
    coef, *_ = np.linalg.lstsq(X, t, rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2])


class Predictor:
    """Predict a network's latency on the LUT's device from its kernels."""

    def __init__(self, lut: LUT, prior_weight: float = 0.1) -> None:
        self.lut = lut
        self.prior_weight = prior_weight
        self.coef = fit_overhead(lut.observations, prior_weight)

    @property
    def coefficients(self) -> dict[str, float]:
        a, b, c = self.coef
        return {"a": a, "b_ms_per_kernel": b, "c_ms": c, "n_observations": len(self.lut.observations)}

    def kernel_sum(self, kernels: Sequence[KernelSpec]) -> float:
        """Sum of the kernels' LUT latencies (missing ones are measured first)."""
        self.lut.fill(kernels, progress=False, save=False)
        return sum(self.lut.get(k) for k in kernels)

    def predict(self, kernels: Sequence[KernelSpec]) -> float:
        """Predicted network latency in ms."""
        a, b, c = self.coef
        return max(a * self.kernel_sum(kernels) + b * len(kernels) + c, 1e-6)

    def predict_model(self, model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> float:
        return self.predict(kernels_from_onnx(model, batch=self.lut.device.batch if self.lut.device else None))

    def observe(self, kernels: Sequence[KernelSpec], live_ms: float, save: bool = True) -> None:
        """Record a live measurement of the network made of `kernels` and refit the overhead."""
        if not (live_ms > 0 and math.isfinite(live_ms)):
            raise ValueError(f"live_ms must be a positive number, got {live_ms}")
        self.lut.add_observation(
            {
                "sum_ms": self.kernel_sum(kernels),
                "n_kernels": len(kernels),
                "macs": sum(k.macs for k in kernels),
                "live_ms": float(live_ms),
                "time": time.time(),
            }
        )
        self.coef = fit_overhead(self.lut.observations, self.prior_weight)
        if save:
            self.lut.save()

    def flops_baseline(self) -> FlopsPredictor:
        """The MACs-proportional baseline fitted on the same live observations."""
        return FlopsPredictor.fit(self.lut.observations)


class FlopsPredictor:
    """Baseline: latency = k * MACs, with k fitted on relative error to live measurements."""

    def __init__(self, ms_per_mac: float) -> None:
        self.ms_per_mac = ms_per_mac

    @classmethod
    def fit(cls, points: Sequence[dict[str, Any]]) -> FlopsPredictor:
        m = np.array([p["macs"] for p in points], dtype=float)
        y = np.array([p["live_ms"] for p in points], dtype=float)
        if len(m) == 0 or not np.any(m > 0):
            raise ValueError("fitting the FLOPs baseline needs live observations of models with MACs")
        r = m / y
        return cls(float(np.sum(r) / np.sum(r * r)))

    def predict(self, kernels: Sequence[KernelSpec]) -> float:
        return self.ms_per_mac * sum(k.macs for k in kernels)


def flops_predictor(lut: LUT) -> FlopsPredictor:
    """`FlopsPredictor` fitted on a LUT's live observations."""
    return FlopsPredictor.fit(lut.observations)


def fidelity(pred: Sequence[float], live: Sequence[float]) -> dict[str, float]:
    """How well predictions track live latencies: share within 10%, MAPE (a fraction, not %),
    and Kendall's tau (rank agreement, what a search that compares candidates needs)."""
    p = np.asarray(pred, dtype=float)
    y = np.asarray(live, dtype=float)
    if p.shape != y.shape or p.size == 0:
        raise ValueError("fidelity needs two non-empty sequences of the same length")
    rel = np.abs(p - y) / y
    return {
        "n": int(p.size),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "mape": float(np.mean(rel)),
        "kendall_tau": stats.kendall_tau(list(p), list(y)) if p.size > 1 else math.nan,
    }
