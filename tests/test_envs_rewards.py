"""envs.rewards: each reward's formula, its parts, names and parameters."""

from __future__ import annotations

import math

import pytest

from envs import rewards
from envs.errors import EnvConfigError
from hilprune.errors import HilpruneError


def test_constrained_is_the_accuracy() -> None:
    r, parts = rewards.constrained(0.83, 1.5, 1.0)
    assert r == 0.83
    assert parts == {"accuracy": 0.83, "within_budget": 0.0}
    assert rewards.constrained(0.83, 0.9, 1.0)[1]["within_budget"] == 1.0


@pytest.mark.parametrize("lat,target", [(0.5, 1.0), (1.0, 1.0), (2.0, 1.0)])
def test_mnasnet_formula(lat: float, target: float) -> None:
    r, parts = rewards.mnasnet(0.9, lat, target)
    assert r == pytest.approx(0.9 * (lat / target) ** -0.07)
    assert parts["latency_ratio"] == pytest.approx(lat / target)
    assert parts["w"] == -0.07
    r2, _ = rewards.mnasnet(0.9, lat, target, w=-0.5)
    assert r2 == pytest.approx(0.9 * (lat / target) ** -0.5)


def test_penalty_formula() -> None:
    assert rewards.penalty(0.9, 0.8, 1.0)[0] == pytest.approx(0.9)  # within budget: no penalty
    r, parts = rewards.penalty(0.9, 1.3, 1.0, penalty_lambda=2.0)
    assert r == pytest.approx(0.9 - 2.0 * 0.3)
    assert parts["overshoot"] == pytest.approx(0.3)
    assert parts["penalty"] == pytest.approx(0.6)


def test_try_and_learn_formula() -> None:
    # ((b - (A - Â)) / b) * log(C / Ĉ)
    r, parts = rewards.try_and_learn(0.97, 0.5, None, dense_accuracy=0.98, dense_latency_ms=2.0, accepted_drop=0.02)
    assert r == pytest.approx(((0.02 - 0.01) / 0.02) * math.log(2.0 / 0.5))
    assert parts["accuracy_term"] == pytest.approx(0.5)
    assert parts["speedup_term"] == pytest.approx(math.log(4.0))
    # A drop larger than accepted turns the reward negative.
    assert rewards.try_and_learn(0.90, 0.5, None, dense_accuracy=0.98, dense_latency_ms=2.0)[0] < 0
    with pytest.raises(ValueError):
        rewards.try_and_learn(0.9, 0.5, None)


def test_names_compute_and_scalar_getter() -> None:
    assert rewards.canonical("try-and-learn") == "try_and_learn"
    assert rewards.canonical("MnasNet") == "mnasnet"
    with pytest.raises(EnvConfigError) as exc:
        rewards.canonical("nope")
    assert isinstance(exc.value, HilpruneError)
    assert "constrained" in str(exc.value)
    r, _ = rewards.compute("penalty", 0.9, 1.5, 1.0, penalty_lambda=0.5)
    assert r == pytest.approx(0.9 - 0.25)
    fn = rewards.get_reward("try-and-learn", accepted_drop=0.05)
    assert fn(0.97, 0.5, 1.0, dense_accuracy=0.98, dense_latency_ms=1.0) == pytest.approx((0.04 / 0.05) * math.log(2.0))
    assert rewards.reward_params("mnasnet", mnasnet_w=-0.2) == {"w": -0.2}
    assert rewards.reward_params("penalty") == {"penalty_lambda": 1.0}
    assert rewards.reward_params("try-and-learn", accepted_drop=0.01) == {"accepted_drop": 0.01}
    assert set(rewards.REWARDS) == {"constrained", "mnasnet", "penalty", "try_and_learn"}
