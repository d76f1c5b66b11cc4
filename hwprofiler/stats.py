"""Small distribution-free statistics for latency samples (no scipy on the device)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Z95 = 1.959963984540054


def nearest_rank(sorted_samples: Sequence[float], p: float) -> float:
    """onnxruntime_perf_test's percentile: `sorted[int(n * p)]`, no interpolation."""
    n = len(sorted_samples)
    return float(sorted_samples[min(int(n * p), n - 1)])


def median(sorted_samples: Sequence[float]) -> float:
    n = len(sorted_samples)
    mid = n // 2
    if n % 2:
        return float(sorted_samples[mid])
    return 0.5 * (sorted_samples[mid - 1] + sorted_samples[mid])


def median_ci(sorted_samples: Sequence[float], z: float = Z95) -> tuple[float, float]:
    """Order-statistic (binomial) confidence interval of the median.

    The ranks n/2 -/+ z*sqrt(n)/2 bound the median with ~95% coverage for any continuous
    distribution; it needs no bootstrap and no normality, which latency tails violate.
    """
    n = len(sorted_samples)
    half = z * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 1)
    hi = min(int(math.ceil(n / 2 + half + 1)), n)
    return float(sorted_samples[lo - 1]), float(sorted_samples[hi - 1])


def median_rel_ci(sorted_samples: Sequence[float]) -> float:
    """Half-width of the median's 95% CI relative to the median (inf when it cannot be told)."""
    if len(sorted_samples) < 2:
        return math.inf
    lo, hi = median_ci(sorted_samples)
    m = median(sorted_samples)
    return (hi - lo) / 2 / m if m > 0 else math.inf


def round_min_median(rounds: Sequence[Sequence[float]]) -> float:
    """The median over rounds of each round's minimum."""
    mins = sorted(min(r) for r in rounds if len(r))
    return median(mins)


def _all_sorted(rounds: Sequence[Sequence[float]]) -> list[float]:
    return sorted(x for r in rounds for x in r)


# How a latency is read from timed rounds. Noise on a shared CPU only adds time (another tenant,
# an interrupt, a slower speed mode), so the low end of the samples is what repeats; the median is
# kept for comparison with what earlier versions reported. bench/live_estimator.py measures how
# well each agrees with itself across minutes and load.
ESTIMATORS: dict[str, Callable[[Sequence[Sequence[float]]], float]] = {
    "min": lambda rounds: _all_sorted(rounds)[0],
    "p10": lambda rounds: nearest_rank(_all_sorted(rounds), 0.10),
    "median": lambda rounds: median(_all_sorted(rounds)),
    "round_min_median": round_min_median,
}


def estimate(rounds: Sequence[Sequence[float]], estimator: str) -> float:
    """`estimator` (a key of ESTIMATORS) applied to rounds of samples."""
    if not any(len(r) for r in rounds):
        raise ValueError("no samples to estimate from")
    try:
        fn = ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}") from None
    return float(fn(rounds))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted as in scipy.stats.kendalltau); O(n^2), fine for hundreds."""
    n = len(x)
    if n != len(y):
        raise ValueError("kendall_tau needs two sequences of the same length")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = x[i] - x[j]
            dy = y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else math.nan
