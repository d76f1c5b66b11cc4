"""Rewards for a pruned model's accuracy and latency against a latency target.

Every reward function takes ``(accuracy, latency_ms, budget_ms, dense_accuracy, dense_latency_ms)``
plus its own parameters as keywords, and returns ``(reward, parts)``: ``parts`` names each term,
so a log shows why a policy scored what it did.

- ``constrained``: the accuracy; the budget is enforced by clipping the actions (AMC), not here.
- ``mnasnet``: ``acc * (lat / target) ** w`` with ``w = -0.07`` (Tan et al. 2019, soft constraint).
- ``penalty``: ``acc - lambda * max(0, lat / target - 1)``.
- ``try_and_learn``: ``((b - (A - Â)) / b) * log(dense_lat / lat)`` (Huang et al., WACV 2018), with
  ``A`` the dense accuracy, ``Â`` the pruned one and ``b`` the accepted accuracy drop.

Accuracies are fractions in [0, 1]; latencies are milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hilprune.budget import within_budget

from .errors import EnvConfigError

RewardParts = dict[str, float]
RewardFn = Callable[..., tuple[float, RewardParts]]

DEFAULTS: dict[str, dict[str, float]] = {
    "constrained": {},
    "mnasnet": {"w": -0.07},
    "penalty": {"penalty_lambda": 1.0},
    "try_and_learn": {"accepted_drop": 0.02},
}


def _pos(name: str, value: float | None) -> float:
    if value is None or not (float(value) > 0 and math.isfinite(float(value))):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def constrained(
    accuracy: float,
    latency_ms: float,
    budget_ms: float | None = None,
    dense_accuracy: float | None = None,
    dense_latency_ms: float | None = None,
) -> tuple[float, RewardParts]:
    """Accuracy alone; `within_budget` is reported, not rewarded (the env clips to the budget)."""
    parts = {"accuracy": float(accuracy)}
    if budget_ms is not None:
        parts["within_budget"] = float(within_budget(latency_ms, budget_ms))
    return float(accuracy), parts


def mnasnet(
    accuracy: float,
    latency_ms: float,
    budget_ms: float,
    dense_accuracy: float | None = None,
    dense_latency_ms: float | None = None,
    w: float = -0.07,
) -> tuple[float, RewardParts]:
    """MnasNet's soft-constrained objective ACC * (LAT / T) ** w."""
    ratio = _pos("latency_ms", latency_ms) / _pos("budget_ms", budget_ms)
    factor = ratio ** float(w)
    return float(accuracy) * factor, {
        "accuracy": float(accuracy),
        "latency_ratio": ratio,
        "latency_factor": factor,
        "w": float(w),
    }


def penalty(
    accuracy: float,
    latency_ms: float,
    budget_ms: float,
    dense_accuracy: float | None = None,
    dense_latency_ms: float | None = None,
    penalty_lambda: float = 1.0,
) -> tuple[float, RewardParts]:
    """Accuracy minus lambda times the relative budget overshoot."""
    over = max(0.0, _pos("latency_ms", latency_ms) / _pos("budget_ms", budget_ms) - 1.0)
    pen = float(penalty_lambda) * over
    return float(accuracy) - pen, {
        "accuracy": float(accuracy),
        "overshoot": over,
        "penalty": pen,
        "penalty_lambda": float(penalty_lambda),
    }


def try_and_learn(
    accuracy: float,
    latency_ms: float,
    budget_ms: float | None = None,
    dense_accuracy: float | None = None,
    dense_latency_ms: float | None = None,
    accepted_drop: float = 0.02,
) -> tuple[float, RewardParts]:
    """Huang et al.'s reward: positive when the accuracy drop is under `accepted_drop`, scaled by
    the log speed-up over the dense model (negative once the drop exceeds it)."""
    if dense_accuracy is None or dense_latency_ms is None:
        raise ValueError("try_and_learn needs dense_accuracy and dense_latency_ms")
    b = _pos("accepted_drop", accepted_drop)
    drop = float(dense_accuracy) - float(accuracy)
    psi = (b - drop) / b
    phi = math.log(_pos("dense_latency_ms", dense_latency_ms) / _pos("latency_ms", latency_ms))
    return psi * phi, {
        "accuracy": float(accuracy),
        "accuracy_drop": drop,
        "accuracy_term": psi,
        "speedup_term": phi,
        "accepted_drop": b,
    }


REWARDS: dict[str, RewardFn] = {
    "constrained": constrained,
    "mnasnet": mnasnet,
    "penalty": penalty,
    "try_and_learn": try_and_learn,
}


def canonical(name: str) -> str:
    """'try-and-learn' and 'Try_And_Learn' -> 'try_and_learn'; unknown names are an EnvConfigError."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in REWARDS:
        raise EnvConfigError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")
    return key


def reward_params(
    name: str, *, accepted_drop: float | None = None, penalty_lambda: float | None = None, mnasnet_w: float | None = None
) -> dict[str, float]:
    """The keyword parameters of reward `name` from the env's option names (None = default)."""
    key = canonical(name)
    params = dict(DEFAULTS[key])
    if key == "mnasnet" and mnasnet_w is not None:
        params["w"] = float(mnasnet_w)
    if key == "penalty" and penalty_lambda is not None:
        params["penalty_lambda"] = float(penalty_lambda)
    if key == "try_and_learn" and accepted_drop is not None:
        params["accepted_drop"] = _pos("accepted_drop", accepted_drop)
    return params


def compute(
    name: str,
    accuracy: float,
    latency_ms: float,
    budget_ms: float | None,
    dense_accuracy: float | None = None,
    dense_latency_ms: float | None = None,
    **params: Any,
) -> tuple[float, RewardParts]:
    """Reward `name` with its defaults overridden by `params`: (reward, parts)."""
    key = canonical(name)
    kw = dict(DEFAULTS[key]) | params
    return REWARDS[key](accuracy, latency_ms, budget_ms, dense_accuracy, dense_latency_ms, **kw)


def get_reward(name: str, **params: Any) -> Callable[..., float]:
    """A scalar version of reward `name`: ``fn(accuracy, latency_ms, budget_ms, dense_accuracy=None,
    dense_latency_ms=None) -> float`` (what a search records as a trial's reward)."""
    key = canonical(name)

    def fn(
        accuracy: float,
        latency_ms: float,
        budget_ms: float | None = None,
        dense_accuracy: float | None = None,
        dense_latency_ms: float | None = None,
    ) -> float:
        return compute(key, accuracy, latency_ms, budget_ms, dense_accuracy, dense_latency_ms, **params)[0]

    fn.__name__ = f"{key}_reward"
    return fn


__all__ = [
    "DEFAULTS",
    "REWARDS",
    "canonical",
    "compute",
    "constrained",
    "get_reward",
    "mnasnet",
    "penalty",
    "reward_params",
    "try_and_learn",
]
