"""What a live measurement returns: one model's latency, or two models' paired ratio.

Kept apart from `measure` (which runs models) so that the client, the cache and the server can
read and write measurements without importing the measuring code, and the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """Latency statistics of one model on one device, in milliseconds.

    `latency_ms` is the number searches use: the device policy's `estimator` applied to the timed
    rounds (see `hwprofiler.stats.ESTIMATORS`). The median, percentiles, minimum and the spread
    between rounds are kept beside it so a record says how noisy the device was.
    """

    latency_ms: float
    estimator: str
    median_ms: float
    min_ms: float
    p10_ms: float
    p90_ms: float
    n: int
    rounds: int = 1
    round_spread: float = 0.0  # (slowest - fastest) / fastest of the rounds' own estimates
    rel_ci: float = math.inf  # half-width of the median's 95% CI / median
    first_run_ms: float | None = None
    samples: tuple[float, ...] | None = field(default=None, repr=False)
    cached: bool = False

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "latency_ms": self.latency_ms,
            "estimator": self.estimator,
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "p10_ms": self.p10_ms,
            "p90_ms": self.p90_ms,
            "n": self.n,
            "rounds": self.rounds,
            "round_spread": self.round_spread,
            "rel_ci": self.rel_ci if math.isfinite(self.rel_ci) else None,
            "first_run_ms": self.first_run_ms,
        }
        if samples and self.samples is not None:
            d["samples"] = list(self.samples)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, cached: bool = False, samples: bool = True) -> Measurement:
        s = d.get("samples") if samples else None
        return cls(
            latency_ms=float(d["latency_ms"]),
            estimator=str(d["estimator"]),
            median_ms=float(d["median_ms"]),
            min_ms=float(d["min_ms"]),
            p10_ms=float(d["p10_ms"]),
            p90_ms=float(d["p90_ms"]),
            n=int(d["n"]),
            rounds=int(d.get("rounds", 1)),
            round_spread=float(d.get("round_spread", 0.0)),
            rel_ci=math.inf if d.get("rel_ci") is None else float(d["rel_ci"]),
            first_run_ms=d.get("first_run_ms"),
            samples=tuple(float(x) for x in s) if s is not None else None,
            cached=cached,
        )


@dataclass(frozen=True)
class PairedMeasurement:
    """A model timed interleaved with a reference (A B B A ...), under the same conditions.

    `ratio` = model / reference, each by the policy's estimator: a speed mode or drift that
    slows both cancels out of it, which a ratio of two separate measurements cannot promise.
    `round_ratios` are the per-round-pair ratios, whose spread says how well the pairing held.
    """

    model: Measurement
    reference: Measurement
    ratio: float
    round_ratios: tuple[float, ...] = ()
    cached: bool = False

    @property
    def ratio_spread(self) -> float:
        """(largest - smallest) / smallest of the per-round ratios (0 with one round)."""
        if len(self.round_ratios) < 2:
            return 0.0
        lo, hi = min(self.round_ratios), max(self.round_ratios)
        return (hi - lo) / lo if lo > 0 else math.inf

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(samples=samples),
            "reference": self.reference.to_dict(samples=samples),
            "ratio": self.ratio,
            "round_ratios": list(self.round_ratios),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, cached: bool = False) -> PairedMeasurement:
        return cls(
            model=Measurement.from_dict(d["model"], cached=cached, samples=False),
            reference=Measurement.from_dict(d["reference"], cached=cached, samples=False),
            ratio=float(d["ratio"]),
            round_ratios=tuple(float(x) for x in d.get("round_ratios", ())),
            cached=cached,
        )
