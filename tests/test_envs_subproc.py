"""LayerPrune-v0 in SB3's SubprocVecEnv: each worker makes the env by id and builds its own evaluator."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_subproc_vec_env_two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from hilprune.budget import within_budget

    # "envs:" makes Gymnasium import envs (which registers the ids) inside each fresh worker.
    vec = make_vec_env(
        "envs:hilprune/LayerPrune-v0",
        n_envs=2,
        seed=0,
        vec_env_cls=SubprocVecEnv,
        env_kwargs={"model": "digits-cnn", "dataset": "digits", "device": "sim-cpu", "val_size": 100, "budget": 0.6},
    )
    try:
        n_groups = vec.get_attr("n_groups")[0]
        obs = vec.reset()
        assert obs.shape == (2, 17)
        finished = []
        for _ in range(2 * n_groups):
            actions = np.stack([vec.action_space.sample() for _ in range(2)])
            obs, rewards, dones, infos = vec.step(actions)
            for done, info, r in zip(dones, infos, rewards):
                if done:
                    finished.append((r, info))
        assert len(finished) == 4  # two episodes per worker
        for r, info in finished:
            assert within_budget(info["latency_ms"], info["budget_ms"])
            assert r == pytest.approx(info["accuracy"])
            assert "terminal_observation" in info
    finally:
        vec.close()
