"""Gymnasium ids of the pruning environments, registered when `envs` is imported.

In worker processes (SubprocVecEnv with forkserver/spawn) make them by the prefixed id
``"envs:hilprune/LayerPrune-v0"``: Gymnasium imports `envs` first, which registers them.
"""

from __future__ import annotations

import gymnasium as gym

LAYER_PRUNE_ID = "hilprune/LayerPrune-v0"
POLICY_PRUNE_ID = "hilprune/PolicyPrune-v0"

_ENVS = {
    LAYER_PRUNE_ID: "envs.layer_prune:LayerPruneEnv",
    POLICY_PRUNE_ID: "envs.policy_prune:PolicyPruneEnv",
}


def register_envs() -> None:
    """Register both ids (idempotent)."""
    for env_id, entry_point in _ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=None)


register_envs()
