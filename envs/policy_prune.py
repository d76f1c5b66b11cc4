"""`hilprune/PolicyPrune-v0`: the whole policy in one step (a contextual bandit).

The action (Box(-1, 1, (groups,))) holds every group's prune ratio at once, mapped to
[0, max_ratio] on the grid; the episode ends after that one step with the policy's reward.
With `reward="constrained"` the ratios are raised in forward order by the same AMC rule as
LayerPrune-v0, so the policy meets the budget by the LUT. In a mixed-precision search (the
evaluator's `precision` is ``mixed``) the action is Box(-1, 1, (2 * groups,)): the ratios, then
each group's precision (0 or above: int8, below: fp32).

Observation (float32, constant for a given set-up): the budget and the lowest reachable
latency as fractions of the dense LUT latency, then each group's share of that latency.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from .base import PruneEnvBase


class PolicyPruneEnv(PruneEnvBase):
    """One-step pruning; keyword options: see `PruneEnvBase`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        G = self.n_groups
        dense = self.dense_ms
        floor = self.evaluator.min_latency_ms()
        self._obs_vec = np.clip(
            np.asarray([self.budget_ms / dense, floor / dense] + list(self.shares), dtype=np.float64), 0.0, 1.0
        ).astype(np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, (G + 2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (G * (1 + int(self.marks_precision)),), dtype=np.float32)
        self._done = True
        self._ratios: list[float] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._done = False
        self._ratios = []
        self.last_result = None
        return self._obs_vec.copy(), {"budget_ms": float(self.budget_ms), "groups": [g.name for g in self.groups]}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the episode is over: call reset() first")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        n = self.action_space.shape[0]
        if a.size != n:
            what = "a ratio and a precision" if self.marks_precision else "one action"
            raise ValueError(f"PolicyPrune-v0 takes {what} per group, shape ({n},); got shape {np.shape(action)}")
        G = self.n_groups
        wanted = [self.action_to_ratio(x) for x in a[:G]]
        marks = {g.name: self.action_to_precision(x) for g, x in zip(self.groups, a[G:])} if self.marks_precision else None
        ratios, reachable = list(wanted), True
        if self.reward_name == "constrained":
            ratios, reachable = self.clip_all(wanted)
        self._ratios = ratios
        self._done = True
        result = self.evaluator.evaluate(ratios, precision=marks, fidelity=self.fidelity)
        self.last_result = result
        reward, parts = self._reward(result)
        info = {
            "action_ratios": wanted,
            "clipped": [bool(r != w) for r, w in zip(ratios, wanted)],
            "budget_reachable": reachable,
        } | self._final_info(result, parts, ratios)
        return self._obs_vec.copy(), float(reward), True, False, info

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.render_rgb(self._ratios)
        if self.render_mode != "ansi":
            return None
        return self.render_ansi(
            f"PolicyPrune-v0 {self.evaluator.spec.name} on {self.evaluator.device.name}: budget {self.budget_ms:.4g} ms"
        )
