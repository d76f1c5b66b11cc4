"""Budget clipping by predicted latency (the device LUT), shared by the baselines.

`sequential_clip` is the AMC-style rule the RL environment applies to its actions: groups are
visited in forward order and each ratio is raised to the smallest value that still lets the
budget be met if every later group were pruned at `max_ratio`. After the last group the
predicted latency is within the budget (when the budget is reachable at all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

Predict = Callable[[Mapping[str, float]], float]


def smallest_ratio(
    lat: Callable[[float], float],
    budget_ms: float,
    low: float,
    high: float,
    tol: float = 1e-3,
    rel_tol: float = 0.0,
    max_iter: int = 60,
) -> tuple[float, float]:
    """Smallest r in [low, high] with lat(r) <= budget (lat non-increasing in r), and lat at it.

    Returns `(high, lat(high))` when even `high` is over the budget. With `rel_tol`, stops early
    once a feasible r has lat(r) >= budget * (1 - rel_tol).
    """
    f_low = lat(low)
    if f_low <= budget_ms:
        return low, f_low
    f_high = lat(high)
    if f_high > budget_ms:
        return high, f_high
    lo, hi, f_hi = low, high, f_high
    for _ in range(max_iter):
        if hi - lo <= tol or (rel_tol and f_hi >= budget_ms * (1 - rel_tol)):
            break
        mid = 0.5 * (lo + hi)
        f_mid = lat(mid)
        if f_mid <= budget_ms:
            hi, f_hi = mid, f_mid
        else:
            lo = mid
    return hi, f_hi


def sequential_clip(
    predict: Predict, names: Sequence[str], ratios: Sequence[float], budget_ms: float, max_ratio: float, tol: float = 1e-3
) -> list[float]:
    """Raise ratios group by group (forward order) so the predicted latency meets `budget_ms`."""
    r = [min(max_ratio, max(0.0, float(x))) for x in ratios]
    n = len(r)
    for i in range(n):

        def lat(x: float, i: int = i) -> float:
            trial = r[:i] + [x] + [max_ratio] * (n - i - 1)
            return float(predict(dict(zip(names, trial))))

        r[i], _ = smallest_ratio(lat, budget_ms, r[i], max_ratio, tol=tol)
    return r
