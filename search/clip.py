"""Budget clipping by predicted latency (the device LUT), shared by the baselines.

`sequential_clip` is the AMC-style rule the RL environment applies to its actions: groups are
visited in forward order and each ratio is raised to the smallest value that still lets the
budget be met if every later group were pruned at `max_ratio`. After the last group the
predicted latency is within the budget (when the budget is reachable at all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from hilprune.budget import smallest_ratio  # the bisection, shared with agent.ppo's start

Predict = Callable[[Mapping[str, float]], float]


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
