"""What both pruning environments share: the evaluator, the budget, the reward, the action
mapping (action in [-1, 1] -> ratio on the grid in [0, max_ratio]) and the AMC budget clip."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from hilprune.budget import Budget, within_budget
from hilprune.policy import channels_after

from . import rewards
from .errors import EnvConfigError
from .evaluator import EvalResult, PolicyEvaluator
from .fidelity import DEFAULT_BN_BATCHES, DEFAULT_VAL_SIZE, parse_ladder

DEFAULT_GRID_STEP = 0.05  # the search space's grid (search.context.SearchContext.grid_step)


class PruneEnvBase(gym.Env):
    """Common set-up; subclasses define the spaces, `reset` and `step`."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        model: Any = "digits-cnn",
        checkpoint: str | None = None,
        input_shape: Any = None,
        dataset: str | None = "digits",
        device: Any = "ort-cpu-1t",
        budget: float | str | Budget = 0.5,
        latency_source: str = "lut",
        reward: str = "constrained",
        val_size: int | None = DEFAULT_VAL_SIZE,
        max_ratio: float | None = None,
        round_to: int | None = None,
        importance: str = "l1",
        data_dir: str | None = None,
        seed: int = 0,
        bn_batches: int = DEFAULT_BN_BATCHES,
        accepted_drop: float | None = None,
        penalty_lambda: float | None = None,
        mnasnet_w: float | None = None,
        grid_step: float | None = DEFAULT_GRID_STEP,
        num_classes: int | None = None,
        evaluator: PolicyEvaluator | None = None,
        render_mode: str | None = None,
        evaluator_options: dict[str, Any] | None = None,
        proxy: str | None = None,
    ) -> None:
        """`proxy`: the accuracy proxy the reward is computed from (`envs.fidelity`; ``bn``, ``bn:N``,
        ``kd:N`` or a ladder, whose top is used). None: the evaluator's (its own default when the env
        builds it). Other options: see `PolicyEvaluator`."""
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise EnvConfigError(f"render_mode {render_mode!r} is not supported; use one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.reward_name = rewards.canonical(reward)
        self.reward_kwargs = rewards.reward_params(
            self.reward_name, accepted_drop=accepted_drop, penalty_lambda=penalty_lambda, mnasnet_w=mnasnet_w
        )
        if evaluator is None:
            if not dataset:
                raise EnvConfigError("a pruning environment needs a dataset (accuracy is part of every reward)")
            evaluator = PolicyEvaluator(
                model,
                dataset=dataset,
                device=device,
                checkpoint=checkpoint,
                input_shape=input_shape,
                num_classes=num_classes,
                latency_source=latency_source,
                val_size=val_size,
                max_ratio=0.9 if max_ratio is None else max_ratio,
                round_to=1 if round_to is None else round_to,
                importance=importance,
                bn_batches=bn_batches,
                data_dir=data_dir,
                seed=seed,
                **({"proxy": proxy} if proxy is not None else {}),
                **(evaluator_options or {}),
            )
        elif evaluator.val is None:
            raise EnvConfigError("the shared evaluator has no dataset (accuracy is part of every reward)")
        self.evaluator = evaluator
        self.fidelity: str | None = None if proxy is None else str(parse_ladder(proxy, evaluator.bn_batches)[0][-1])
        if not evaluator.has_lut:
            raise EnvConfigError("the environments need a LUT for the model (observations and budget clipping)")
        self.max_ratio = float(evaluator.max_ratio if max_ratio is None else max_ratio)
        if not 0.0 < self.max_ratio <= evaluator.max_ratio + 1e-12:
            raise EnvConfigError(f"max_ratio {self.max_ratio} must be in (0, {evaluator.max_ratio}] (the evaluator's)")
        if round_to is not None and int(round_to) != evaluator.round_to:
            raise EnvConfigError(f"round_to {round_to} differs from the shared evaluator's ({evaluator.round_to})")
        if grid_step is not None and not (0.0 < float(grid_step) <= self.max_ratio):
            raise EnvConfigError(f"grid_step must be in (0, max_ratio] or None (continuous), got {grid_step!r}")
        self.grid_step = float(grid_step) if grid_step else None
        self.groups = evaluator.groups
        self.n_groups = len(self.groups)
        self.budget = evaluator.check_budget(budget)  # BudgetError when max_ratio cannot reach it
        self.budget_ms = self.budget.ms
        evaluator.add_budget(self.budget)
        self.dense_ms = float(evaluator.dense_latency_ms)  # the frame of every latency the env compares (`lut_scale`)
        self.shares = evaluator.group_latency_shares()
        # a mixed-precision search (`envs.precision`): each action also marks its group(s) fp32 or int8
        self.marks_precision = getattr(getattr(evaluator, "precision", None), "mode", "fp32") == "mixed"
        self._max_kept = tuple(channels_after(g.channels, self.max_ratio, evaluator.round_to) for g in self.groups)
        self.last_result: EvalResult | None = None

    # --- actions -------------------------------------------------------------------------------------
    def action_to_ratio(self, a: float) -> float:
        """[-1, 1] -> [0, max_ratio], snapped to the grid."""
        a = float(a)
        if not math.isfinite(a):
            raise ValueError(f"action {a} is not a finite number")
        r = (min(1.0, max(-1.0, a)) + 1.0) / 2.0 * self.max_ratio
        if self.grid_step:
            r = round(r / self.grid_step) * self.grid_step
        return round(min(self.max_ratio, max(0.0, r)), 9)

    @staticmethod
    def action_to_precision(a: float) -> str:
        """A precision action in [-1, 1]: 0 or above marks the group int8 (the neutral action: the
        device's table found INT8 faster), below 0 fp32. The evaluator still keeps fp32 where the
        device prices INT8 slower."""
        a = float(a)
        if not math.isfinite(a):
            raise ValueError(f"action {a} is not a finite number")
        return "int8" if a >= 0 else "fp32"

    def ratio_to_action(self, r: float) -> float:
        return float(2.0 * r / self.max_ratio - 1.0)

    def _kept(self, i: int, r: float) -> int:
        return channels_after(self.groups[i].channels, r, self.evaluator.round_to)

    def _candidates(self, i: int, r: float) -> list[tuple[float, int]]:
        """Ratios >= r for group i (ascending), one per distinct kept count, ending at max_ratio."""
        if self.grid_step:
            n = int(math.floor(self.max_ratio / self.grid_step + 1e-9))
            ratios = [r] + [round(k * self.grid_step, 9) for k in range(n + 1) if k * self.grid_step > r + 1e-12]
        else:
            c = self.groups[i].channels
            ratios = [r] + [(c - k) / c for k in range(self._kept(i, r) - 1, 0, -1) if (c - k) / c <= self.max_ratio]
        ratios.append(self.max_ratio)
        out: list[tuple[float, int]] = []
        for x in ratios:
            if x > self.max_ratio + 1e-12 or x < r - 1e-12:
                continue
            k = self._kept(i, x)
            if not out or k < out[-1][1]:
                out.append((min(x, self.max_ratio), k))
        return out

    def clip_ratio(self, i: int, r: float, prefix: Sequence[int]) -> tuple[float, bool]:
        """AMC's rule: the smallest ratio >= r for group i such that the budget is still met (by
        the LUT) if every later group is pruned at max_ratio. Returns (ratio, reachable)."""
        tail = self._max_kept[i + 1 :]

        def lat(k: int) -> float:
            return self.evaluator.predict_kept(tuple(prefix) + (k,) + tail)

        cands = self._candidates(i, r)
        if within_budget(lat(cands[0][1]), self.budget_ms):
            return cands[0][0], True
        if not within_budget(lat(cands[-1][1]), self.budget_ms):
            return cands[-1][0], False
        lo, hi = 0, len(cands) - 1  # lo infeasible, hi feasible
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if within_budget(lat(cands[mid][1]), self.budget_ms):
                hi = mid
            else:
                lo = mid
        return cands[hi][0], True

    def clip_all(self, ratios: Sequence[float]) -> tuple[list[float], bool]:
        """`clip_ratio` over every group in forward order."""
        out: list[float] = []
        prefix: list[int] = []
        ok = True
        for i, r in enumerate(ratios):
            c, reachable = self.clip_ratio(i, r, prefix)
            ok = ok and reachable
            out.append(c)
            prefix.append(self._kept(i, c))
        return out, ok

    # --- reward and final info -------------------------------------------------------------------------
    def _reward(self, result: EvalResult) -> tuple[float, dict[str, float]]:
        ev = self.evaluator
        return rewards.compute(
            self.reward_name,
            result.accuracy,
            result.latency_ms,
            self.budget_ms,
            ev.dense_accuracy,
            ev.dense_latency_for(result),
            **self.reward_kwargs,
        )

    def _final_info(self, result: EvalResult, parts: dict[str, float], ratios: Sequence[float]) -> dict[str, Any]:
        """Deterministic for a given policy (no timings: Gymnasium's checker compares infos)."""
        return {
            "policy": result.policy.to_dict(),
            "ratios": [float(r) for r in ratios],
            "accuracy": float(result.accuracy),
            "latency_ms": float(result.latency_ms),
            "lut_latency_ms": float(result.lut_latency_ms),
            "live_latency_ms": None if result.live_latency_ms is None else float(result.live_latency_ms),
            "latency_kind": result.latency_kind,
            "live_ratio": result.live_ratio,
            "fidelity": result.fidelity,
            "budget_ms": float(self.budget_ms),
            "within_budget": within_budget(result.latency_ms, self.budget_ms),
            "macs": int(result.macs),
            "params": int(result.params),
            "dense_accuracy": float(self.evaluator.dense_accuracy),
            "dense_latency_ms": float(self.evaluator.dense_latency_ms),
            "reward_parts": dict(parts),
        }

    def render_ansi(self, header: str) -> str:
        """The policy so far as text: one line per group with its latency share and ratio."""
        lines = [header]
        for i, g in enumerate(self.groups):
            r = f"{self._ratios[i]:.2f}" if i < len(self._ratios) else "  - "
            lines.append(f"  {g.name:<32} {g.channels:>5} ch  share {self.shares[i]:6.1%}  ratio {r}")
        if self.last_result is not None:
            res = self.last_result
            lines.append(f"  accuracy {res.accuracy:.4f}  latency {res.latency_ms:.4g} ms ({res.latency_kind})")
        return "\n".join(lines) + "\n"

    def render_rgb(self, ratios: Sequence[float]) -> np.ndarray:
        """One bar per group: kept channels grey, pruned red, groups not decided yet dark."""
        h, bar = 96, 6
        img = np.full((h, max(64, bar * self.n_groups), 3), 255, dtype=np.uint8)
        for i in range(self.n_groups):
            x0, x1 = i * bar, i * bar + bar - 1
            if i >= len(ratios):
                img[:, x0:x1] = (60, 60, 60)
                continue
            cut = int(round(h * ratios[i]))
            img[:cut, x0:x1] = (220, 50, 50)
            img[cut:, x0:x1] = (150, 150, 150)
        return img

    def close(self) -> None:
        self.evaluator.flush()
        super().close()
