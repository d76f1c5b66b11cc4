"""`hilprune/LayerPrune-v0`: one step per prunable group, in forward order (AMC-style).

Each step's action (Box(-1, 1, (1,))) becomes the group's prune ratio in [0, max_ratio], on the
grid. In a mixed-precision search (the evaluator's `precision` is ``mixed``) the action is
Box(-1, 1, (2,)): the ratio, then the group's precision (0 or above: int8, below: fp32).

The observation describes the group and where the episode stands against the latency budget, all
from the device LUT. The episode's only reward comes at its last step, after the whole policy has
been evaluated (accuracy by the accuracy proxy, `proxy`: BN recalibration, then distillation
steps by default; latency by the evaluator's `latency_source`). With `reward="constrained"` every
action is raised, when needed, to the smallest ratio that keeps the budget reachable if every
later group were pruned at max_ratio, so every episode ends within the budget by the LUT.

Observation (float32, each in [0, 1]):

 0 position of the group (index / (groups - 1))
 1-3 layer type: conv, depthwise, linear (one-hot)
 4-5 input / output channels of the group's root layer (/ the largest)
 6-7 kernel size, stride (/ the largest)
 8 input height of the root layer (/ the largest)
 9-10 MACs, parameters of the root layer (/ the largest)
 11 the group's share of the dense model's device latency (LUT)
 12 latency already removed by earlier groups (fraction of the dense LUT latency)
 13 latency still to remove to meet the budget (same unit)
 14 latency share of the groups still to come
 15 previous action (ratio / max_ratio)
 16 the budget (fraction of the dense LUT latency)
 17 (mixed precision only) the previous group marked int8
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from .base import PruneEnvBase
from .features import KINDS, layer_table

N_FEATURES = 17


class LayerPruneEnv(PruneEnvBase):
    """Sequential layer-wise pruning; see the module docstring. Keyword options: see `PruneEnvBase`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ev = self.evaluator
        table = layer_table(ev.surgeon.dense, ev.surgeon.example, list(self.groups))
        G = self.n_groups

        def norm(values: list[float]) -> np.ndarray:
            a = np.asarray(values, dtype=np.float64)
            top = a.max() if a.size and a.max() > 0 else 1.0
            return a / top

        static = np.zeros((G, 12), dtype=np.float64)
        static[:, 0] = np.arange(G) / max(1, G - 1)
        for i, info in enumerate(table):
            static[i, 1 + KINDS.index(info.kind if info.kind in KINDS else "conv")] = 1.0
        static[:, 4] = norm([t.in_channels for t in table])
        static[:, 5] = norm([t.out_channels for t in table])
        static[:, 6] = norm([t.kernel for t in table])
        static[:, 7] = norm([t.stride for t in table])
        static[:, 8] = norm([t.input_size for t in table])
        static[:, 9] = norm([t.macs for t in table])
        static[:, 10] = norm([t.params for t in table])
        static[:, 11] = np.asarray(self.shares)
        self.layers = table
        self._static = static
        self._rest_share = [float(sum(self.shares[i + 1 :])) for i in range(G)]
        self.n_features = N_FEATURES + int(self.marks_precision)
        self.observation_space = spaces.Box(0.0, 1.0, (self.n_features,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1 + int(self.marks_precision),), dtype=np.float32)
        self._t = 0
        self._ratios: list[float] = []
        self._marks: list[str] = []
        self._kept_prefix: list[int] = []
        self._done = True

    # --- gymnasium API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._ratios = []
        self._marks = []
        self._kept_prefix = []
        self._done = False
        self.last_result = None
        return self._obs(), {"group": self.groups[0].name, "step": 0, "budget_ms": float(self.budget_ms)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the episode is over: call reset() first")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        n = self.action_space.shape[0]
        if a.size != n:
            what = "a ratio and a precision" if self.marks_precision else "one action"
            raise ValueError(f"LayerPrune-v0 takes {what} per step (shape ({n},)), got shape {np.shape(action)}")
        i = self._t
        wanted = self.action_to_ratio(a[0])
        if self.marks_precision:
            self._marks.append(self.action_to_precision(a[1]))
        ratio, reachable = wanted, True
        if self.reward_name == "constrained":
            ratio, reachable = self.clip_ratio(i, wanted, self._kept_prefix)
        self._ratios.append(ratio)
        self._kept_prefix.append(self._kept(i, ratio))
        self._t += 1
        info: dict[str, Any] = {
            "group": self.groups[i].name,
            "step": i,
            "action_ratio": wanted,
            "ratio": ratio,
            "clipped": bool(ratio != wanted),
            "budget_reachable": reachable,
        }
        if self.marks_precision:
            info["precision"] = self._marks[-1]
        if self._t < self.n_groups:
            return self._obs(), 0.0, False, False, info
        self._done = True
        marks = {g.name: m for g, m in zip(self.groups, self._marks)} if self.marks_precision else None
        result = self.evaluator.evaluate(list(self._ratios), precision=marks, fidelity=self.fidelity)
        self.last_result = result
        reward, parts = self._reward(result)
        info |= self._final_info(result, parts, self._ratios)
        return self._obs(), float(reward), True, False, info

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.render_rgb(self._ratios)
        if self.render_mode != "ansi":
            return None
        return self.render_ansi(
            f"LayerPrune-v0 {self.evaluator.spec.name} on {self.evaluator.device.name}: "
            f"budget {self.budget_ms:.4g} ms, step {self._t}/{self.n_groups}"
        )

    # --- observation ------------------------------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        G = self.n_groups
        i = min(self._t, G - 1)
        obs = np.zeros(self.n_features, dtype=np.float64)
        obs[:12] = self._static[i]
        if self._t >= G:
            obs[0] = 1.0
        dense = self.dense_ms
        ev = self.evaluator
        # Latency of the policy so far with the remaining groups left dense.
        now = ev.predict_kept(tuple(self._kept_prefix) + tuple(g.channels for g in self.groups[len(self._kept_prefix) :]))
        obs[12] = (dense - now) / dense
        obs[13] = max(0.0, now - self.budget_ms) / dense
        obs[14] = self._rest_share[i] if self._t < G else 0.0
        obs[15] = self._ratios[-1] / self.max_ratio if self._ratios else 0.0
        obs[16] = self.budget_ms / dense
        if self.marks_precision:
            obs[17] = float(bool(self._marks) and self._marks[-1] == "int8")
        return np.clip(obs, 0.0, 1.0).astype(np.float32)
