"""Random search: random per-group ratios, clipped to a budget like the RL environment clips.

Evaluation i (counted over the whole job, so a resumed job continues the same sequence) draws
ratios uniformly in [0, max_ratio] from `numpy.random.default_rng([seed, i])`, then raises them
group by group until the predicted latency meets budget i mod len(budgets) (see `search.clip`).
In a mixed-precision search it then marks each group fp32 or int8 with equal odds, from the same
stream (the ratios are clipped by the all-INT8 prices, `PolicyEvaluator.predict_latency`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hilprune.budget import Budget

from ..clip import sequential_clip

if TYPE_CHECKING:
    from ..context import SearchContext


class RandomAgent:
    name = "random"
    supports_workers = False

    def __init__(self, clip: bool = True, low: float = 0.0, high: float | None = None) -> None:
        self.clip = bool(clip)
        self.low = float(low)
        self.high = high

    def sample(self, ctx: SearchContext, index: int) -> tuple[dict[str, float], Budget | None]:
        """The ratios of the job's `index`-th random evaluation and the budget they were clipped to."""
        names = ctx.group_names
        high = float(self.high) if self.high is not None else ctx.max_ratio
        rng = np.random.default_rng([int(ctx.seed), int(index)])
        raw = rng.uniform(self.low, high, size=len(names)).tolist()
        budget = ctx.budgets[index % len(ctx.budgets)] if ctx.budgets else None
        if self.clip and budget is not None:
            raw = sequential_clip(ctx.evaluator.predict_latency, names, raw, budget.ms, ctx.max_ratio)
        return dict(zip(names, raw)), budget

    def marks(self, ctx: SearchContext, index: int) -> dict[str, str] | None:
        """The `index`-th evaluation's precision per group in a mixed-precision search (else None)."""
        if not ctx.mixed_precision:
            return None
        rng = np.random.default_rng([int(ctx.seed), int(index), 1])
        return {n: ("int8" if b else "fp32") for n, b in zip(ctx.group_names, rng.integers(0, 2, len(ctx.group_names)))}

    def run(self, ctx: SearchContext, n_evals: int) -> None:
        start = ctx.finished(self.name)
        for i in range(start, start + int(n_evals)):
            ratios, budget = self.sample(ctx, i)
            ctx.evaluate(self.name, ratios, budget=budget, extra_attrs={"random_index": i}, precision=self.marks(ctx, i))
