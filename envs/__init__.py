"""Gymnasium environments for hardware-in-the-loop pruning, and the policy evaluator behind them.

Importing `envs` registers ``hilprune/LayerPrune-v0`` and ``hilprune/PolicyPrune-v0``.
Everything heavy (torch, the model) is imported lazily, when an env or evaluator is built.
"""

from __future__ import annotations

from typing import Any

from . import rewards
from .errors import BudgetError, EnvConfigError
from .registration import LAYER_PRUNE_ID, POLICY_PRUNE_ID, register_envs

__all__ = [
    "LAYER_PRUNE_ID",
    "POLICY_PRUNE_ID",
    "BudgetError",
    "EnvConfigError",
    "EvalResult",
    "LayerPruneEnv",
    "PolicyEvaluator",
    "PolicyPruneEnv",
    "register_envs",
    "rewards",
]


def __getattr__(name: str) -> Any:
    if name in ("PolicyEvaluator", "EvalResult"):
        from . import evaluator

        return getattr(evaluator, name)
    if name == "LayerPruneEnv":
        from .layer_prune import LayerPruneEnv

        return LayerPruneEnv
    if name == "PolicyPruneEnv":
        from .policy_prune import PolicyPruneEnv

        return PolicyPruneEnv
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
