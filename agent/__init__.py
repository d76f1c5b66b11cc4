"""PPO try-and-learn (and SAC / AMC-style DDPG) on `hilprune/LayerPrune-v0`, with callbacks that
record every episode as a search trial. Imported lazily: `from agent import PPOAgent` loads
stable-baselines3 only then."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ALGOS",
    "CheckpointCallback",
    "DDPGAgent",
    "NoiseDecayCallback",
    "PPOAgent",
    "RecordTrialsCallback",
    "SACAgent",
    "TensorBoardCallback",
    "find_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in ("ALGOS", "DDPGAgent", "PPOAgent", "SACAgent", "QuotaEvaluator"):
        from . import ppo

        return getattr(ppo, name)
    if name in (
        "CheckpointCallback",
        "NoiseDecayCallback",
        "RecordTrialsCallback",
        "TensorBoardCallback",
        "find_checkpoint",
        "EpisodeCallback",
        "episode_result",
    ):
        from . import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
