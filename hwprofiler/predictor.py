"""Network latency from kernel latencies, corrected by a per-device overhead model.

Summing single-kernel measurements is biased: each one includes a session Run() overhead and,
on blocked-layout (NCHWc) CPUs, layout reorders that a whole network does not pay between
kernels; and each kernel is timed with its weights hot in cache, while a network whose weights
exceed the cache streams them from memory on every inference.  Kernels with odd channel counts
run on onnxruntime's plain NCHW path, and where a network switches between that and the blocked
layout it pays a reorder that no one-kernel graph contains.  So the prediction is
`a*sum_ms + b*n_kernels + c + d*weight_mb + e*plain_sum_ms + f*transition_melems`, fitted by
least squares on relative error to every live measurement observed so far (stored in the LUT),
shrunk toward `(1, 0, 0, 0, 0, 0)` while few are known.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from hwprofiler import stats
from hwprofiler.fusion import device_kernels
from hwprofiler.kernels import KernelSpec
from hwprofiler.lut import LUT
from hwprofiler.measure import Measurement, measure_onnx, model_bytes
from hwprofiler.onnx_kernels import kernels_from_onnx

FLOOR = 0.25  # of the kernel sum: see Predictor.predict
PRIOR = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
Coefficients = tuple[float, float, float, float, float, float]


def weight_mb(kernels: Sequence[KernelSpec], dtype: str = "float32") -> float:
    """Megabytes of weights the kernels read per inference."""
    return sum(k.params for k in kernels) * (2 if dtype == "float16" else 4) / 2**20


def nchwc_block(fingerprint: dict[str, Any]) -> int:
    """onnxruntime's blocked-layout (NCHWc) channel block on this CPU: 16 with AVX-512, else 8."""
    return 16 if "avx512f" in json.dumps(fingerprint) else 8


def runs_blocked(k: KernelSpec, block: int) -> bool:
    """Whether onnxruntime runs this kernel in its blocked NCHWc layout (direct conv) rather than
    the plain NCHW path (im2col + GEMM): input channels a multiple of the block or fewer than one
    block for a dense conv; channels a multiple of the block for a depthwise conv or a pool."""
    if k.op == "conv" and k.groups == 1:
        return k.cin % block == 0 or k.cin < block
    if (k.op == "conv" and k.groups == k.cin == k.cout) or k.op in ("maxpool", "avgpool", "globalavgpool"):
        return k.cin % block == 0
    return False


def transition_melems(kernels: Sequence[KernelSpec], block: int) -> float:
    """Millions of elements reordered where the network switches between the blocked and the
    plain layout (consecutive layout-bearing kernels in execution order): a cost the network
    pays and no one-kernel LUT entry contains."""
    layout_ops = ("conv", "maxpool", "avgpool", "globalavgpool")
    total, prev = 0, None
    for k in kernels:
        if k.op not in layout_ops:
            continue
        blocked = runs_blocked(k, block)
        if prev is not None and prev[0] != blocked:
            total += prev[1]
        ho, wo = k.out_hw
        prev = (blocked, k.batch * k.cout * ho * wo)
    return total / 1e6


def _ridge(X: np.ndarray, cols: list[int], prior_weight: float) -> np.ndarray:
    """Solve X[:, cols] @ coef ~ 1 with ridge rows pulling each coefficient to its prior."""
    Xc = X[:, cols]
    prior = np.array(PRIOR)[cols]
    # Each prior row is scaled to what one unit of its coefficient does to a relative residual.
    P = prior_weight * np.diag(np.maximum(np.mean(np.abs(Xc), axis=0), 1e-12))
    sol, *_ = np.linalg.lstsq(np.vstack([Xc, P]), np.concatenate([np.ones(len(Xc)), P @ prior]), rcond=None)
    coef = np.array(PRIOR)
    coef[cols] = sol
    return coef


def fit_overhead(points: Sequence[dict[str, Any]], prior_weight: float = 0.3) -> Coefficients:
    """Weighted ridge fit of live_ms ~ a*sum_ms + b*n_kernels + c + d*weight_mb + e*plain_sum_ms, on residuals
    relative to live_ms (a 10% miss counts the same on a 0.1 ms and a 100 ms network).

    Physical signs are enforced: weights cannot make a network faster (d >= 0, else refit
    without d), a session's fixed cost cannot be negative (c >= 0, else refit without c; a
    negative intercept sends small, heavily pruned networks to zero), and a non-positive scale
    falls back to a pure ratio live/sum.

    `plain_sum_ms` is the part of the sum from kernels on onnxruntime's plain NCHW path (odd
    channel counts). Measured alone, their im2col buffers stay hot in cache; inside a network
    they ran ~30% slower than their LUT entries (resnet20 with 23/45 channels: 50-56 us per
    conv in the network's profile vs 41 us in the LUT), while blocked-layout kernels did not:
    `e` is that extra cost, learned per device.
    """
    if not points:
        return PRIOR
    s = np.array([p["sum_ms"] for p in points], dtype=float)
    n = np.array([p["n_kernels"] for p in points], dtype=float)
    w = np.array([p.get("weight_mb", 0.0) for p in points], dtype=float)
    plain = np.array([p.get("plain_sum_ms", 0.0) for p in points], dtype=float)
    trans = np.array([p.get("transition_melems", 0.0) for p in points], dtype=float)
    y = np.array([p["live_ms"] for p in points], dtype=float)
    X = np.stack([s, n, np.ones_like(s), w, plain, trans], axis=1) / y[:, None]
    cols = [0, 1, 2, 3] + ([4] if np.any(plain > 0) else []) + ([5] if np.any(trans > 0) else [])
    coef = _ridge(X, cols, prior_weight)
    for sign_constrained in (5, 3, 2):
        if coef[sign_constrained] < 0:
            cols.remove(sign_constrained)
            coef = _ridge(X, cols, prior_weight)
    if coef[0] <= 0:
        coef = _ridge(X, [0], 0.0)
    return float(coef[0]), float(coef[1]), float(coef[2]), float(coef[3]), float(coef[4]), float(coef[5])


class Predictor:
    """Predict a network's latency on the LUT's device from its kernels."""

    def __init__(self, lut: LUT, prior_weight: float = 0.3) -> None:
        self.lut = lut
        self.prior_weight = prior_weight
        self.coef = fit_overhead(lut.observations, prior_weight)
        self.block = nchwc_block(lut.fingerprint)

    @property
    def coefficients(self) -> dict[str, float]:
        a, b, c, d, e, f = self.coef
        return {
            "a": a,
            "b_ms_per_kernel": b,
            "c_ms": c,
            "d_ms_per_weight_mb": d,
            "e_plain_path_scale": e,
            "f_ms_per_transition_melem": f,
            "n_observations": len(self.lut.observations),
        }

    @property
    def _dtype(self) -> str:
        return self.lut.device.dtype if self.lut.device is not None else "float32"

    def kernel_sum(self, kernels: Sequence[KernelSpec]) -> float:
        """Sum of the kernels' LUT latencies (missing ones are measured first)."""
        self.lut.fill(kernels, progress=False, save=False)
        return sum(self.lut.get(k) for k in kernels)

    def plain_sum(self, kernels: Sequence[KernelSpec]) -> float:
        """The part of `kernel_sum` from kernels on the plain NCHW path (see fit_overhead)."""
        return sum(
            self.lut.get(k)
            for k in kernels
            if k.op in ("conv", "maxpool", "avgpool", "globalavgpool") and not runs_blocked(k, self.block)
        )

    def predict(self, kernels: Sequence[KernelSpec]) -> float:
        """Predicted network latency in ms.

        Floored at a quarter of the kernel sum: the fit is linear, and far outside the networks it
        was fitted on (a tiny, heavily pruned one) a negative per-kernel term must not reach zero.
        """
        a, b, c, d, e, f = self.coef
        total = self.kernel_sum(kernels)
        linear = (
            a * total
            + b * len(kernels)
            + c
            + d * weight_mb(kernels, self._dtype)
            + e * self.plain_sum(kernels)
            + f * transition_melems(kernels, self.block)
        )
        return max(linear, FLOOR * total, 1e-6)

    def predict_model(self, model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> float:
        """Predicted latency in ms of an exported model (free batch dimension = device batch), as
        the LUT's device runs it (a table opened without a device: as onnxruntime fuses it)."""
        device = self.lut.device
        return self.predict(device_kernels(model, device) if device is not None else kernels_from_onnx(model))

    def observe(self, kernels: Sequence[KernelSpec], live_ms: float, save: bool = True) -> None:
        """Record a live measurement of the network made of `kernels` and refit the overhead."""
        if not (live_ms > 0 and math.isfinite(live_ms)):
            raise ValueError(f"live_ms must be a positive number, got {live_ms}")
        self.lut.add_observation(
            {
                "sum_ms": self.kernel_sum(kernels),
                "n_kernels": len(kernels),
                "macs": sum(k.macs for k in kernels),
                "weight_mb": weight_mb(kernels, self._dtype),
                "plain_sum_ms": self.plain_sum(kernels),
                "transition_melems": transition_melems(kernels, self.block),
                "live_ms": float(live_ms),
                "time": time.time(),
            }
        )
        self.coef = fit_overhead(self.lut.observations, self.prior_weight)
        if save:
            self.lut.save()

    def observe_model(self, model: onnx.ModelProto | bytes | str | os.PathLike[str], save: bool = True) -> Measurement:
        """Measure a model live on the LUT's device (cached) and feed the result to the fit."""
        device = self.lut.require_device()
        m = measure_onnx(model_bytes(model), device)
        self.observe(device_kernels(model, device), m.latency_ms, save=save)
        return m

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
        "within_10pct": float(np.mean(rel <= 0.10 + 1e-9)),
        "mape": float(np.mean(rel)),
        "kendall_tau": stats.kendall_tau(list(p), list(y)) if p.size > 1 else math.nan,
    }
