"""The uniform baseline: one prune ratio for every group.

For each budget, the ratio is bisected on the evaluator's predicted latency (the device LUT,
the same predictor the environment clips with) until the prediction is within the budget and
no more than 2% under it; when rounding and LUT noise make that miss, the channel breakpoints
near the bisection's answer are scanned (see `ratio_for_budget`). That policy is evaluated.
Evaluations left over go to a sweep of uniform ratios on the grid (coarse to fine), which
draws the uniform curve in the Pareto plot. Uniform stops early when it has nothing new to
evaluate; on resume it skips the budgets and sweep ratios already in its study.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import optuna

from hilprune.budget import Budget, within_budget

from ..clip import smallest_ratio
from ..store import grid_high

if TYPE_CHECKING:
    from ..context import SearchContext

log = logging.getLogger(__name__)


def sweep_order(n: int) -> list[int]:
    """Indices 1..n in coarse-to-fine order (midpoint first, then quarters, ...)."""
    out: list[int] = []
    seen = set()
    level = 2
    while len(out) < n and level <= 4 * (n + 1):
        for k in range(1, level, 2):
            i = round(k * (n + 1) / level)
            if 1 <= i <= n and i not in seen:
                seen.add(i)
                out.append(i)
        level *= 2
    out += [i for i in range(1, n + 1) if i not in seen]
    return out


def _better(c: float, p: float, best: tuple[float, float], budget_ms: float, tol: float) -> bool:
    """Is (ratio c, prediction p) a better uniform point for the budget than `best`? Both are within it."""
    near, best_near = p >= budget_ms * (1 - tol), best[1] >= budget_ms * (1 - tol)
    if near != best_near:
        return near
    if near:  # both within tolerance: the least pruning
        return c < best[0]
    return p > best[1] or (p == best[1] and c < best[0])  # neither: the closest under the budget


class UniformAgent:
    name = "uniform"
    supports_workers = False

    def __init__(
        self, tolerance: float = 0.02, sweep: bool = True, ratio_tol: float = 1e-4, window: float = 0.9, max_scan: int = 128
    ) -> None:
        self.tolerance = float(tolerance)
        self.sweep = bool(sweep)
        self.ratio_tol = float(ratio_tol)
        self.window = float(window)
        self.max_scan = int(max_scan)

    def ratio_for_budget(self, ctx: SearchContext, budget_ms: float) -> tuple[float, float]:
        """(uniform ratio, predicted latency) for a budget.

        Bisection on the predicted latency first. Channel rounding and per-kernel LUT noise make the
        prediction a non-monotone step function of the ratio, so when bisection does not land within
        `tolerance` under the budget, the ratios where some group's channel count changes near it are
        scanned too (at most `max_scan` predictions): the least pruning within `tolerance` under the
        budget wins, else the prediction closest under the budget.
        """
        names = ctx.group_names
        ev = ctx.evaluator

        def lat(r: float) -> float:
            return float(ev.predict_latency({n: r for n in names}))

        r, pred = smallest_ratio(lat, budget_ms, 0.0, ctx.max_ratio, tol=self.ratio_tol, rel_tol=self.tolerance)
        if within_budget(pred, budget_ms) and (pred >= budget_ms * (1 - self.tolerance) or r == 0.0):
            return r, pred
        best = (r, pred)
        for c in self._breakpoints(ctx, r):
            p = lat(c)
            if not within_budget(p, budget_ms):
                continue
            if not within_budget(best[1], budget_ms) or _better(c, p, best, budget_ms, self.tolerance):
                best = (c, p)
        r, pred = best
        if not within_budget(pred, budget_ms):
            log.warning("uniform: budget %.4g ms is out of reach (predicted %.4g ms at ratio %.2f)", budget_ms, pred, r)
        elif pred < budget_ms * (1 - self.tolerance):
            log.info("uniform: closest prediction under %.4g ms is %.4g ms (ratio %.4f)", budget_ms, pred, r)
        return r, pred

    def _breakpoints(self, ctx: SearchContext, center: float) -> list[float]:
        """Uniform ratios near `center` where the kept channels change (smallest ratio of each), nearest first."""
        ev = ctx.evaluator
        lo, hi = max(0.0, center - self.window), min(ctx.max_ratio, center + self.window)
        widest = max((g.channels for g in ev.groups), default=0) or 64
        step = 1.0 / (4 * widest)
        names = ctx.group_names
        out: list[float] = []
        last = None
        x = lo
        while x <= hi + 1e-12:
            key = ev.kept({n: x for n in names})
            if key != last:
                out.append(math.ceil(x * 1e6) / 1e6)  # rounded up: a ratio just under the breakpoint keeps the old count
                last = key
            x += step
        out.sort(key=lambda c: (abs(c - center), c))
        return out[: self.max_scan]

    def plan(
        self, ctx: SearchContext, skip_budgets: frozenset[float] | set[float] = frozenset()
    ) -> list[tuple[float, Budget | None, float | None]]:
        """(ratio, budget, predicted_ms) to evaluate, budget points first."""
        items: list[tuple[float, Budget | None, float | None]] = []
        for b in ctx.budgets:
            if round(b.ms, 9) in skip_budgets:
                continue
            r, pred = self.ratio_for_budget(ctx, b.ms)
            items.append((r, b, pred))
        if self.sweep:
            high = grid_high(ctx.max_ratio, ctx.grid_step)
            n = int(round(high / ctx.grid_step))
            for i in sweep_order(n):
                items.append((round(i * ctx.grid_step, 10), None, None))
        return items

    def run(self, ctx: SearchContext, n_evals: int) -> None:
        done, done_budgets = set(), set()
        for t in ctx.study(self.name).get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.user_attrs.get("uniform_ratio") is not None:
                done.add(round(float(t.user_attrs["uniform_ratio"]), 6))
            if t.user_attrs.get("target_budget_ms") is not None:
                done_budgets.add(round(float(t.user_attrs["target_budget_ms"]), 9))
        left = int(n_evals)
        for ratio, budget, pred in self.plan(ctx, skip_budgets=done_budgets):
            if left <= 0:
                break
            key = round(ratio, 6)
            if key in done and budget is None:
                continue
            done.add(key)
            extra: dict = {"uniform_ratio": ratio}
            if budget is not None:
                extra |= {
                    "target_budget_ms": budget.ms,
                    "predicted_latency_ms": pred,
                    "within_tolerance": bool(
                        pred is not None and budget.ms * (1 - self.tolerance) <= pred and within_budget(pred, budget.ms)
                    ),
                }
            ctx.evaluate(self.name, {n: ratio for n in ctx.group_names}, budget=budget, extra_attrs=extra)
            left -= 1
        if left > 0:
            log.info("uniform: nothing new to evaluate (%d evaluations unused)", left)
