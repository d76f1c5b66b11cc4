"""Network latency from kernel latencies, corrected by a model learned on the device itself.

Summing single-kernel measurements is biased, and how much depends on the device: each one-kernel
graph pays a run's fixed cost and its own layout reorders, which a network pays once; a kernel
timed alone keeps its weights and scratch buffers hot in cache, which a network does not; and a
network pays a reorder wherever consecutive kernels switch between a blocked SIMD layout and the
plain one. Which kernels run blocked, and how much each kind is off, changes with the CPU's
instruction set and the runtime's version, so nothing here is assumed: each kernel's layout is
read from the runtime when the kernel is timed (`LUT.layout`), and the correction is fitted to the
device's own live measurements (`LUT.observations`).

The correction is a ridge regression on kernel-level features, on errors relative to the live
latency, shrunk toward "the kernel sum is right" while few measurements are known:

    live_ms ~ sum_k s[class(k)] * lut_ms(k) + b * n_kernels + c + d * weight_mb + f * transition_melems
              [+ g * gmacs]

with one scale `s` per kernel class (conv, depthwise conv, grouped conv, pool, linear, element-wise,
other; each by its layout), or one scale for all. The MACs term is a candidate, not a given: where
the kernel times carry scattered errors of their own (OpenVINO's mobilenetv2 on a Zen 5, where
MACs ranked 20 policies at Kendall's tau 0.93 and the LUT at 0.83), some of a network's time is
better read from its arithmetic; where MACs lie (odd channel counts on onnxruntime) it is not.
The device's own runs decide, by leave-one-out (`fit_correction`). Observations carry a scope
(the model they came from): a model with enough of its own is fitted on those alone, others on
all of the device's.
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
from hwprofiler.fusion import device_kernels
from hwprofiler.kernels import KernelSpec
from hwprofiler.lut import LUT
from hwprofiler.measure import measure_onnx, model_bytes
from hwprofiler.measurement import Measurement
from hwprofiler.onnx_kernels import kernels_from_onnx

FLOOR = 0.25  # of the kernel sum: see Correction.price
MIN_SCOPE = 12  # observations of one model before it is fitted on its own
LAYOUT_OPS = ("conv", "maxpool", "avgpool", "globalavgpool", "globalmaxpool")
EXTRA = ("n_kernels", "intercept", "weight_mb", "transition_melems", "gmacs")  # the features after the class sums
NONNEGATIVE = ("intercept", "weight_mb", "transition_melems", "gmacs")  # physical: none of these makes a network faster
MACS_TERM = "+macs"  # the suffix of a candidate model that fits the MACs term (without it, g stays 0)
MIN_SCALE = 0.05  # a kernel class cannot cost less than this share of its time alone
MINOR_SHARE = 0.05  # classes below this share of the calibration's kernel time share one scale
MIN_LOO = 8  # live runs before the per-class model may be chosen over one scale
MAX_LOO = 60  # the model is chosen on the latest this many runs: leave-one-out costs one fit per run,
# and a device's table collects hundreds over many searches while every live run refits it


def weight_mb(kernels: Sequence[KernelSpec], dtype: str = "float32") -> float:
    """Megabytes of weights the kernels read per inference."""
    return sum(k.params for k in kernels) * (2 if dtype == "float16" else 4) / 2**20


def kernel_class(k: KernelSpec, layout: str | None) -> str:
    """The class a kernel's LUT time is scaled by: its kind (INT8 apart), and, where the runtime chooses one, its layout."""
    if k.op == "conv":
        kind = "conv" if k.groups == 1 else ("dwconv" if k.groups == k.cin == k.cout else "gconv")
    elif k.op in ("maxpool", "avgpool", "globalavgpool", "globalmaxpool"):
        kind = "pool"
    elif k.op == "linear":
        kind = "linear"
    elif k.op in ("add", "mul", "act", "concat", "bn"):
        kind = "eltwise"
    else:
        kind = "other"
    if k.precision != "fp32" and kind != "other":  # INT8 kernels keep their own scale: other costs, other code
        kind += "-int8"
    return f"{kind}:{layout or 'any'}"


def transition_melems(kernels: Sequence[KernelSpec], layouts: Sequence[str | None]) -> float:
    """Millions of elements reordered where consecutive layout-bearing kernels (in execution order)
    switch between the blocked and the plain layout: a cost the network pays and no one-kernel LUT
    entry contains."""
    total, prev = 0, None
    for k, layout in zip(kernels, layouts):
        if k.op not in LAYOUT_OPS or layout is None:
            continue
        if prev is not None and prev[0] != layout:
            total += prev[1]
        ho, wo = k.out_hw
        prev = (layout, k.batch * k.cout * ho * wo)
    return total / 1e6


def network_features(lut: LUT, kernels: Sequence[KernelSpec], dtype: str = "float32") -> dict[str, Any]:
    """What the correction reads from a network: its LUT time per kernel class and the extras
    (missing kernels are measured first)."""
    lut.fill(kernels, progress=False, save=False)
    layouts = [lut.layout(k) for k in kernels]
    sums: dict[str, float] = {}
    for k, layout in zip(kernels, layouts):
        c = kernel_class(k, layout)
        sums[c] = sums.get(c, 0.0) + lut.get(k)
    return {
        "class_ms": sums,
        "sum_ms": sum(sums.values()),
        "n_kernels": len(kernels),
        "weight_mb": weight_mb(kernels, dtype),
        "transition_melems": transition_melems(kernels, layouts),
        "macs": sum(k.macs for k in kernels),
    }


def _row(f: dict[str, Any], columns: Sequence[str], mapping: dict[str, str]) -> np.ndarray:
    """A network's features: its LUT time per column (classes mapped onto columns), then the extras."""
    cols = dict.fromkeys(columns, 0.0)
    for c, v in f["class_ms"].items():
        if c in mapping:
            cols[mapping[c]] += float(v)
    extras = [float(f["n_kernels"]), 1.0, float(f["weight_mb"]), float(f["transition_melems"]), float(f.get("macs", 0)) / 1e9]
    return np.array([*cols.values(), *extras])


class Correction:
    """The fitted correction: one scale per column (kernel classes mapped onto columns: one column
    per class, or all classes on one) and the extras' coefficients."""

    def __init__(self, columns: Sequence[str], mapping: dict[str, str], coef: np.ndarray, n: int, model: str = "prior") -> None:
        self.columns, self.mapping, self.coef, self.n, self.model = list(columns), dict(mapping), coef, n, model

    @classmethod
    def prior(cls) -> Correction:
        return cls([], {}, np.zeros(len(EXTRA)), 0)

    def _extra(self, name: str) -> float:
        return float(self.coef[len(self.columns) + EXTRA.index(name)])

    def predict(self, f: dict[str, Any]) -> float:
        """Predicted ms; classes the fit never saw keep their LUT time (scale 1)."""
        unseen = sum(float(v) for c, v in f["class_ms"].items() if c not in self.mapping)
        return float(_row(f, self.columns, self.mapping) @ self.coef) + unseen

    def price(self, f: dict[str, Any]) -> float:
        """`predict`, floored at a quarter of the kernel sum: the fit is linear, and far outside
        the networks it was fitted on (a tiny, heavily pruned one) a negative per-kernel term must
        not reach zero."""
        return max(self.predict(f), FLOOR * f["sum_ms"], 1e-6)

    def kernel_cost(self, cls: str, lut_ms: float, weight: float, macs: float = 0.0) -> float:
        """One kernel's own share of a prediction: its LUT time scaled by its class's factor, plus
        the per-kernel, per-weight and per-MAC terms (the intercept and the layout reorders belong
        to the network, not to a kernel)."""
        scale = float(self.coef[self.columns.index(self.mapping[cls])]) if cls in self.mapping else 1.0
        return scale * lut_ms + self._extra("n_kernels") + self._extra("weight_mb") * weight + self._extra("gmacs") * macs / 1e9

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        out |= {f"scale[{c}]": float(v) for c, v in zip(self.columns, self.coef)}
        out |= {"b_ms_per_kernel": self._extra("n_kernels"), "c_ms": self._extra("intercept")}
        out |= {"d_ms_per_weight_mb": self._extra("weight_mb"), "f_ms_per_transition_melem": self._extra("transition_melems")}
        out |= {"g_ms_per_gmac": self._extra("gmacs"), "n_observations": self.n}
        return out


def _solve(
    points: Sequence[dict[str, Any]], columns: list[str], mapping: dict[str, str], prior_weight: float, macs: bool = False
) -> np.ndarray:
    """Bounded ridge fit of live_ms on the features, on residuals relative to live_ms; the MACs
    term is fitted only with `macs` (else it stays 0)."""
    from scipy.optimize import lsq_linear

    y = np.array([float(p["live_ms"]) for p in points])
    X = np.stack([_row(p, columns, mapping) for p in points]) / y[:, None]
    prior = np.array([1.0] * len(columns) + [0.0] * len(EXTRA))
    P = prior_weight * np.diag(np.maximum(np.mean(np.abs(X), axis=0), 1e-12))
    lower = np.array([MIN_SCALE] * len(columns) + [-np.inf if e not in NONNEGATIVE else 0.0 for e in EXTRA])
    upper = np.full(len(prior), np.inf)
    unused = ~np.any(X, axis=0)  # a feature no observation has (no reorders, say): it stays at its prior
    unused[len(columns) + EXTRA.index("gmacs")] |= not macs
    lower[unused] = prior[unused] - 1e-12
    upper[unused] = prior[unused] + 1e-12
    fit = lsq_linear(np.vstack([X, P]), np.concatenate([np.ones(len(X)), P @ prior]), bounds=(lower, upper), method="bvls")
    return np.clip(fit.x, lower, upper)


def _groupings(points: Sequence[dict[str, Any]]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The candidate groupings of kernel classes: one scale per kernel class (classes with under
    MINOR_SHARE of the time pooled: a few dozen runs cannot tell a tiny class from the fixed
    terms), and one scale for all."""
    totals: dict[str, float] = {}
    for p in points:
        for c, v in p["class_ms"].items():
            totals[c] = totals.get(c, 0.0) + float(v)
    grand = sum(totals.values()) or 1.0
    seen = [c for c, v in sorted(totals.items()) if v > 0]
    per_class = {c: (c if totals[c] / grand >= MINOR_SHARE else "minor") for c in seen}
    return {
        "per_class": (list(dict.fromkeys(per_class.values())), per_class),
        "one_scale": (["all"], dict.fromkeys(seen, "all")),
    }


def _candidates(points: Sequence[dict[str, Any]]) -> dict[str, tuple[list[str], dict[str, str], bool]]:
    """The candidate models: each grouping without the MACs term, then, where the runs know their
    MACs, with it (so a tie leaves the term out)."""
    groupings = _groupings(points)
    out = {name: (*g, False) for name, g in groupings.items()}
    if any(float(p.get("macs", 0)) > 0 for p in points):
        out |= {name + MACS_TERM: (*g, True) for name, g in groupings.items()}
    return out


def _loo_error(
    points: Sequence[dict[str, Any]], columns: list[str], mapping: dict[str, str], macs: bool, prior_weight: float
) -> float:
    """Mean relative error of each point predicted by a fit on all the others."""
    errs = []
    for i, p in enumerate(points):
        coef = _solve([q for j, q in enumerate(points) if j != i], columns, mapping, prior_weight, macs)
        pred = Correction(columns, mapping, coef, 0).predict(p)
        errs.append(abs(pred / float(p["live_ms"]) - 1))
    return float(np.mean(errs))


def fit_correction(points: Sequence[dict[str, Any]], prior_weight: float = 0.3) -> Correction:
    """The correction for a device, learned from its live runs.

    Each candidate model (`_candidates`: per-class scales or one scale, with or without the MACs
    term) is a ridge fit of live_ms on the features, on residuals relative to live_ms (a 10% miss
    counts the same on a 0.1 ms and a 100 ms network), each coefficient pulled toward its prior
    (scales 1, extras 0) by a row scaled to what one unit of it does, and kept physical by bounds:
    a scale stays positive, and neither the fixed cost, the weights, the reorders nor the MACs can
    make a network faster. Which model a device gets is decided by its own runs: the one with the
    lowest leave-one-out error on the latest MAX_LOO runs (with fewer than MIN_LOO runs, one scale
    without the MACs term). Per-class scales won on some models and CPUs and overfitted on others,
    and MACs help where kernel times scatter but mislead where channel counts are odd
    (docs/benchmarks.md, "LUT fidelity"), so the data chooses."""
    usable = [p for p in points if isinstance(p.get("class_ms"), dict) and float(p.get("live_ms", 0)) > 0]
    if not usable:
        return Correction.prior()
    candidates = _candidates(usable)
    if len(candidates["per_class"][0]) == 1:  # one class: per-class scales are one scale
        candidates = {m: c for m, c in candidates.items() if not m.startswith("per_class")}
    if len(usable) < MIN_LOO:
        name = "one_scale"
    else:
        recent = usable[-MAX_LOO:]
        name = min(candidates, key=lambda m: _loo_error(recent, *candidates[m], prior_weight))
    columns, mapping, macs = candidates[name]
    return Correction(columns, mapping, _solve(usable, columns, mapping, prior_weight, macs), len(usable), name)


class Predictor:
    """Predict a network's latency on the LUT's device from its kernels.

    :param scope: the model whose networks this predictor prices (e.g. its groups signature):
        with `MIN_SCOPE` observations of its own it is fitted on those alone
    """

    def __init__(self, lut: LUT, prior_weight: float = 0.3, scope: str | None = None) -> None:
        self.lut = lut
        self.prior_weight = prior_weight
        self.scope = scope
        self.correction = fit_correction(self._points(), prior_weight)

    def _points(self) -> list[dict[str, Any]]:
        obs = self.lut.observations
        own = [o for o in obs if self.scope is not None and o.get("scope") == self.scope]
        return own if len(own) >= MIN_SCOPE else obs

    def refit(self) -> None:
        self.correction = fit_correction(self._points(), self.prior_weight)

    @property
    def coefficients(self) -> dict[str, Any]:
        return self.correction.to_dict() | {"scope": self.scope, "n_observations_all": len(self.lut.observations)}

    @property
    def _dtype(self) -> str:
        return self.lut.device.dtype if self.lut.device is not None else "float32"

    def features(self, kernels: Sequence[KernelSpec]) -> dict[str, Any]:
        return network_features(self.lut, kernels, self._dtype)

    def kernel_sum(self, kernels: Sequence[KernelSpec]) -> float:
        """Sum of the kernels' LUT latencies (missing ones are measured first)."""
        return float(self.features(kernels)["sum_ms"])

    def predict(self, kernels: Sequence[KernelSpec]) -> float:
        """Predicted network latency in ms (`Correction.price`)."""
        return self.correction.price(self.features(kernels))

    def kernel_costs(self, kernels: Sequence[KernelSpec]) -> list[float]:
        """Each kernel's share of `predict` (`Correction.kernel_cost`): what lets a caller compare
        parts of two networks, such as one layer's fp32 and INT8 kernels."""
        self.lut.fill(kernels, progress=False, save=False)
        return [
            self.correction.kernel_cost(
                kernel_class(k, self.lut.layout(k)), self.lut.get(k), weight_mb([k], self._dtype), float(k.macs)
            )
            for k in kernels
        ]

    def predict_model(self, model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> float:
        """Predicted latency in ms of an exported model (free batch dimension = device batch), as
        the LUT's device runs it (a table opened without a device: as onnxruntime fuses it)."""
        device = self.lut.device
        return self.predict(device_kernels(model, device) if device is not None else kernels_from_onnx(model))

    def observe(self, kernels: Sequence[KernelSpec], live_ms: float, save: bool = True, refit: bool = True) -> None:
        """Record a live latency of the network made of `kernels` and refit the correction.

        `refit=False` defers the refit to the caller (a batch of observations, then one `refit`):
        each refit chooses its model by leave-one-out fits, so refitting after each of n runs costs
        O(n^2) solves where one refit at the end gives the same correction."""
        if not (live_ms > 0 and math.isfinite(live_ms)):
            raise ValueError(f"live_ms must be a positive number, got {live_ms}")
        record = self.features(kernels) | {"live_ms": float(live_ms), "time": time.time(), "scope": self.scope}
        self.lut.add_observation(record)
        if refit:
            self.refit()
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
        return FlopsPredictor.fit(self._points())


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
    """How well predictions track live latencies: shares within 5% and 10%, MAPE (a fraction, not
    %), and Kendall's tau (rank agreement, what a search that compares candidates needs)."""
    p = np.asarray(pred, dtype=float)
    y = np.asarray(live, dtype=float)
    if p.shape != y.shape or p.size == 0:
        raise ValueError("fidelity needs two non-empty sequences of the same length")
    rel = np.abs(p - y) / y
    return {
        "n": int(p.size),
        "within_5pct": float(np.mean(rel <= 0.05 + 1e-9)),
        "within_10pct": float(np.mean(rel <= 0.10 + 1e-9)),
        "mape": float(np.mean(rel)),
        "kendall_tau": stats.kendall_tau(list(p), list(y)) if p.size > 1 else math.nan,
    }
