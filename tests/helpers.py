"""Small helpers shared by test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

from typing import Any


def reachable_budget_ms(evaluator: Any, frac: float, above_floor: float = 0.4) -> float:
    """`frac` of the dense latency in ms, or more: at least `above_floor` of the way from the LUT floor
    (every group at max_ratio) to the dense LUT latency. Tiny models' fixed per-kernel costs put that
    floor anywhere from 0.4 to 0.6 of dense on a loaded CPU; a budget near it leaves only collapsed
    policies, and a test must not fail on the machine's load."""
    floor, dense = evaluator.min_latency_ms(), evaluator.dense_lut_latency_ms
    return max(evaluator.budget_ms(frac), floor + above_floor * (dense - floor))
