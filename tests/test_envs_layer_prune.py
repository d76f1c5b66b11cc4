"""hilprune/LayerPrune-v0 and hilprune/PolicyPrune-v0 on digits-cnn / digits / sim-cpu (exact budgets)."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.errors import BudgetError, EnvConfigError
from envs.evaluator import PolicyEvaluator
from hilprune.budget import within_budget
from hilprune.errors import HilpruneError
from hilprune.policy import Policy

FINAL_KEYS = {
    "policy",
    "accuracy",
    "latency_ms",
    "lut_latency_ms",
    "live_latency_ms",
    "budget_ms",
    "macs",
    "params",
    "reward_parts",
}


@pytest.fixture(scope="module")
def ev() -> PolicyEvaluator:
    return PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=200, proxy="bn")


@pytest.fixture(scope="module")
def budget() -> float:
    return 0.65


def run_episode(env: gym.Env, seed: int) -> tuple[list[float], dict]:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    rewards, done, info = [], False, {}
    while not done:
        _obs, r, done, trunc, info = env.step(env.action_space.sample())
        assert not trunc
        rewards.append(r)
    return rewards, info


def test_registered_by_import() -> None:
    spec = gym.spec("hilprune/LayerPrune-v0")
    assert spec.entry_point == "envs.layer_prune:LayerPruneEnv"
    assert gym.spec("hilprune/PolicyPrune-v0").entry_point == "envs.policy_prune:PolicyPruneEnv"
    assert envs.LAYER_PRUNE_ID == "hilprune/LayerPrune-v0"


def test_random_episodes(ev: PolicyEvaluator) -> None:
    budget_ms = 0.6 * ev.dense_latency_ms
    env = gym.make("hilprune/LayerPrune-v0", evaluator=ev, budget=0.6)
    assert env.observation_space.shape == (17,) and env.action_space.shape == (1,)
    assert any(abs(b - env.unwrapped.budget_ms) < 1e-12 for b in ev.budgets_ms)  # for the hybrid rule, in ms
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["group"] == "features.0"
    for seed in range(3):
        rewards, info = run_episode(env, seed)
        assert len(rewards) == ev.n_groups
        assert rewards[:-1] == [0.0] * (ev.n_groups - 1)
        assert FINAL_KEYS <= set(info)
        assert rewards[-1] == pytest.approx(info["accuracy"])  # constrained: reward = accuracy
        assert info["budget_ms"] == pytest.approx(budget_ms)
        policy = Policy.from_dict(info["policy"])
        assert [g.requested_ratio for g in policy.groups] == pytest.approx(info["ratios"])
        assert all(0.0 <= r <= 0.9 + 1e-9 for r in info["ratios"])
        assert all(abs(r / 0.05 - round(r / 0.05)) < 1e-6 or r == 0.9 for r in info["ratios"])  # on the grid
    with pytest.raises(RuntimeError):
        env.unwrapped.step(np.zeros(1, dtype=np.float32))  # the episode is over
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.unwrapped.step(np.zeros(2, dtype=np.float32))


def test_constrained_episodes_end_within_budget(ev: PolicyEvaluator, budget: float) -> None:
    env = gym.make("hilprune/LayerPrune-v0", evaluator=ev, budget=budget, reward="constrained")
    for seed in range(50):
        _rewards, info = run_episode(env, 100 + seed)
        assert within_budget(info["latency_ms"], info["budget_ms"]), seed
        assert info["reward_parts"]["within_budget"] == 1.0
    # The same rule over the whole action vector (PolicyPrune-v0).
    penv = gym.make("hilprune/PolicyPrune-v0", evaluator=ev, budget=budget)
    for seed in range(10):
        _rewards, info = run_episode(penv, seed)
        assert within_budget(info["latency_ms"], info["budget_ms"])


def test_unconstrained_rewards_follow_their_formula(ev: PolicyEvaluator, budget: float) -> None:
    from envs import rewards

    for name, kw in (
        ("mnasnet", {"mnasnet_w": -0.07}),
        ("penalty", {"penalty_lambda": 2.0}),
        ("try-and-learn", {"accepted_drop": 0.05}),
    ):
        env = gym.make("hilprune/LayerPrune-v0", evaluator=ev, budget=budget, reward=name, **kw)
        rs, info = run_episode(env, 7)
        res = env.unwrapped.last_result
        params = rewards.reward_params(
            name, accepted_drop=kw.get("accepted_drop"), penalty_lambda=kw.get("penalty_lambda"), mnasnet_w=kw.get("mnasnet_w")
        )
        expect, parts = rewards.compute(
            name, res.accuracy, res.latency_ms, info["budget_ms"], ev.dense_accuracy, ev.dense_latency_ms, **params
        )
        assert rs[-1] == pytest.approx(expect)
        assert info["reward_parts"] == pytest.approx(parts)


def test_cache_and_seeding(ev: PolicyEvaluator, budget: float) -> None:
    env = gym.make("hilprune/LayerPrune-v0", evaluator=ev, budget=budget)
    r1, info1 = run_episode(env, 42)
    n = ev.n_evaluations
    r2, info2 = run_episode(env, 42)  # same seed, same actions: same policy, not evaluated again
    assert ev.n_evaluations == n and env.unwrapped.last_result.cached
    assert r1 == r2 and info1["policy"]["groups"] == info2["policy"]["groups"]
    o1, _ = env.reset(seed=5)
    o2, _ = env.reset(seed=5)
    assert np.array_equal(o1, o2)
    other = gym.make("hilprune/LayerPrune-v0", evaluator=ev, budget=budget)
    r3, info3 = run_episode(other, 42)
    assert r3 == r1 and info3["ratios"] == info1["ratios"]


def test_checkers_pass(ev: PolicyEvaluator, budget: float) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    for env_id in ("hilprune/LayerPrune-v0", "hilprune/PolicyPrune-v0"):
        env = gym.make(env_id, evaluator=ev, budget=budget, render_mode="ansi")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym_check(env.unwrapped)
            sb3_check(env.unwrapped, warn=True)
        assert not caught, [str(w.message) for w in caught]
        env.reset(seed=0)
        assert "budget" in env.unwrapped.render()
        img = gym.make(env_id, evaluator=ev, budget=budget, render_mode="rgb_array")
        img.reset(seed=0)
        frame = img.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def test_unreachable_budget_is_a_clear_error(ev: PolicyEvaluator) -> None:
    with pytest.raises(BudgetError) as exc:
        gym.make("hilprune/LayerPrune-v0", evaluator=ev, budget=0.01)
    assert isinstance(exc.value, HilpruneError) and "cannot be met" in str(exc.value)
    with pytest.raises(EnvConfigError):
        gym.make("hilprune/LayerPrune-v0", evaluator=ev, reward="fastest")


def test_user_model_env() -> None:
    user = str(Path(__file__).parent / "fixtures_envs" / "user_cnn.py") + ":build"
    from envs.evaluator import PolicyEvaluator

    # A tiny 8x8 model is dominated by fixed per-kernel costs (the LUT may even find its fastest
    # policy no faster than dense): a budget just above the LUT's floor is tight but reachable.
    ev = PolicyEvaluator(user, dataset="digits", device="sim-cpu", val_size=100, proxy="bn")
    budget_ms = ev.min_latency_ms() * 1.05
    env = gym.make(
        "hilprune/LayerPrune-v0", model=user, dataset="digits", val_size=100, budget=f"{budget_ms:.6f}ms", evaluator=ev
    )
    rewards, info = run_episode(env, 0)
    assert len(rewards) == env.unwrapped.n_groups
    assert within_budget(info["latency_ms"], info["budget_ms"])
    assert info["policy"]["model"]["name"] == user
