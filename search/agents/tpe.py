"""Optuna TPE baseline over per-group prune ratios, with the latency budget as a constraint.

Design (Optuna 5.0):

- the job's study is shared by every agent's form: directions `[maximize accuracy, minimize
  latency_ms]`, params = per-group ratios on the grid `FloatDistribution(0, max_ratio,
  step=grid_step)`. TPE runs *multi-objective* (MOTPE) on it, `multivariate=True` (v5 would
  otherwise fall back to independent TPE for multi-objective studies) and `constant_liar=True`
  (several workers on one storage do not all propose the same point);
- the budget is a constraint, set per trial with the v5 API `trial.set_constraint("latency_budget",
  latency_ms - budget_ms)` before the trial is told (feasible when <= 0; `constraints_func=` is
  deprecated in v5). TPE puts infeasible trials in its "bad" set, ranked by violation;
- with several budgets the constraint is the *loosest* budget: the feasible Pareto front then
  answers every budget at once (the best trial within budget b is on it for every b below the
  loosest). Constraining by the tightest budget would make the looser budgets' answers no
  better than the tightest one's; one study per budget would break "one study per job and agent";
- warm start (default on, first worker of a fresh study only): for each budget the uniform policy
  the LUT predicts just meets it is enqueued, so TPE starts from a feasible point per budget;
- several processes (`--workers`) share the study through the storage with ask/tell; each
  worker's sampler is seeded by `ctx.seed` (the runner adds the worker index to it) mixed with the
  agent's name (`agent_seed`), so TPE and NSGA-II do not share their random start.

Each trial is exactly one policy (`ctx.record` writes the user attrs, the agent tells the
values). With a proxy ladder (`--proxy kd:40` is ``bn:10,kd:40``) the policy is scored rung by
rung and Optuna's successive-halving pruner stops weak ones at the cheap rung; they are told
PRUNED (`search.agents.rungs`; agent options `pruner` = sh | hyperband | none and
`reduction_factor`). A failed evaluation marks its trial FAIL and re-raises.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hilprune.budget import Budget, within_budget

from .rungs import RungGate

if TYPE_CHECKING:
    from ..context import SearchContext

log = logging.getLogger(__name__)

CONSTRAINT = "latency_budget"

# Optuna 5 sets constraints per trial (`Trial.set_constraint`); Optuna 4 asks the sampler for a
# `constraints_func` (deprecated in 5), fed here from a `constraints` user attr.
HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")


def _constraints_from_attrs(trial: optuna.trial.FrozenTrial) -> list[float]:
    return [float(v) for v in trial.user_attrs.get("constraints", [0.0])]


def sampler_constraint_kwargs() -> dict[str, Any]:
    """Extra sampler arguments for constrained optimization on this Optuna version."""
    return {} if HAS_SET_CONSTRAINT else {"constraints_func": _constraints_from_attrs}


def set_trial_constraint(trial: optuna.Trial, key: str, value: float) -> None:
    """Set a live trial's (single) constraint, feasible when <= 0, before it is told."""
    if HAS_SET_CONSTRAINT:
        trial.set_constraint(key, float(value))
    else:  # pragma: no cover - Optuna 4
        trial.set_user_attr("constraints", [float(value)])


def frozen_constraint_kwargs(key: str, value: float) -> dict[str, Any]:
    """`optuna.trial.create_trial` arguments that carry a (single) constraint."""
    if HAS_SET_CONSTRAINT:
        return {"constraints": {key: float(value)}}
    return {"user_attrs": {"constraints": [float(value)]}, "system_attrs": {"constraints": (float(value),)}}  # pragma: no cover


def snap_up(ratio: float, step: float, max_ratio: float) -> float:
    """The smallest grid value >= ratio (never above the grid's top, which is <= max_ratio)."""
    high = math.floor(max_ratio / step + 1e-9) * step
    return round(min(high, max(0.0, math.ceil(ratio / step - 1e-9) * step)), 10)


def ratio_params(ctx: SearchContext, trial: optuna.Trial) -> dict[str, float]:
    """Suggest one ratio per group on the job's grid (the shared trial form)."""
    return {n: trial.suggest_float(n, d.low, d.high, step=d.step) for n, d in ctx.distributions().items()}


def precision_params(ctx: SearchContext, trial: optuna.Trial) -> dict[str, str] | None:
    """In a mixed-precision search, suggest fp32 or int8 per group (None otherwise)."""
    if not ctx.mixed_precision:
        return None
    dists = ctx.precision_distributions()
    return {n: str(trial.suggest_categorical(p, dists[p].choices)) for n, p in zip(ctx.group_names, dists)}


def uniform_for_budget(ctx: SearchContext, budget_ms: float) -> float | None:
    """The smallest uniform grid ratio the LUT predicts within `budget_ms` (None when none is).

    A scan of the grid, not a bisection: measured latency is not monotone in the ratio.
    """
    names = ctx.group_names
    n = int(math.floor(ctx.max_ratio / ctx.grid_step + 1e-9))
    for k in range(n + 1):
        r = round(k * ctx.grid_step, 10)
        if within_budget(float(ctx.evaluator.predict_latency({name: r for name in names})), budget_ms):
            return r
    return None


def agent_seed(seed: int, agent_name: str) -> int:
    """The sampler seed of one agent: the job's seed (the runner adds the worker index to it) mixed
    with the agent's name, so agents with the same seed do not draw the same random start."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(agent_name.encode())]).generate_state(1)[0])


class OptunaAgentBase:
    """Ask/tell loop shared by the Optuna baselines: one trial = one evaluation = one record."""

    name = "optuna"
    supports_workers = True
    warm_start = True
    gate = RungGate()  # successive halving over the proxy ladder (subclasses set their own)

    # -- to override -----------------------------------------------------------------------------
    def make_sampler(self, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def constraint_budget(self, ctx: SearchContext) -> Budget | None:
        """The budget used as the trial constraint: the loosest one (see the module docstring)."""
        return max(ctx.budgets, key=lambda b: b.ms) if ctx.budgets else None

    # -- helpers -----------------------------------------------------------------------------------
    def worker_seed(self, ctx: SearchContext) -> int:
        return agent_seed(ctx.seed, self.name)

    def enqueue_warm_start(self, ctx: SearchContext, study: optuna.Study) -> int:
        """Enqueue one uniform policy per budget into a fresh study (first worker only)."""
        if not self.warm_start or ctx.worker_index != 0 or study.get_trials(deepcopy=False):
            return 0
        seen = set()
        for b in sorted(ctx.budgets_ms):
            r = uniform_for_budget(ctx, b)
            if r is None or r in seen:
                continue
            seen.add(r)
            # in a mixed-precision search, uniform_for_budget priced the all-INT8 graph: enqueue that one
            marks = {p: "int8" for p in ctx.precision_distributions()}
            study.enqueue_trial({n: r for n in ctx.group_names} | marks, user_attrs={"warm_start": "uniform"})
        return len(seen)

    def evaluate_trial(
        self,
        ctx: SearchContext,
        study: optuna.Study,
        trial: optuna.Trial,
        ratios: Mapping[str, float],
        extra_attrs: Mapping[str, Any] | None = None,
        precision: Mapping[str, str] | None = None,
    ) -> Any:
        """Evaluate `ratios` (and `precision` marks, mixed search), set the constraint and user
        attrs, tell the trial; returns the EvalResult."""
        budget = self.constraint_budget(ctx)
        try:
            result, gate_attrs = self.gate.score(
                ctx, self.name, ctx.ratios_dict(ratios), trial.number, dict(precision) if precision is not None else None
            )
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        if budget is not None:
            set_trial_constraint(trial, CONSTRAINT, float(result.latency_ms) - budget.ms)
        attrs = {"constraint_budget_ms": None if budget is None else budget.ms} | gate_attrs | dict(extra_attrs or {})
        ctx.record(self.name, result, trial, budget=budget, extra_attrs=attrs)
        if gate_attrs.get("pruned"):
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, ctx.values(result))
        return result

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, ctx: SearchContext, n_evals: int) -> None:
        import torch

        torch.set_num_threads(1)
        study = ctx.study(self.name, sampler=self.make_sampler(ctx))
        self.enqueue_warm_start(ctx, study)
        for _ in range(int(n_evals)):
            trial = study.ask()
            ratios = ratio_params(ctx, trial)
            self.evaluate_trial(ctx, study, trial, ratios, precision=precision_params(ctx, trial))


class TPEAgent(OptunaAgentBase):
    """Multi-objective TPE (accuracy, latency) with the loosest budget as a constraint.

    :param n_startup_trials: random trials before TPE models the study (Optuna's default is 10)
    :param multivariate: joint (multivariate) TPE over all groups; the ratios interact through latency
    :param warm_start: enqueue the budget-meeting uniform policy of each budget first
    :param pruner, reduction_factor: multi-fidelity over the proxy ladder (`search.agents.rungs.RungGate`)
    """

    name = "tpe"

    def __init__(
        self,
        n_startup_trials: int = 10,
        multivariate: bool = True,
        constant_liar: bool = True,
        n_ei_candidates: int = 24,
        warm_start: bool = True,
        pruner: str = "sh",
        reduction_factor: int = 3,
    ) -> None:
        self.gate = RungGate(pruner, reduction_factor)
        self.n_startup_trials = int(n_startup_trials)
        self.multivariate = bool(multivariate)
        self.constant_liar = bool(constant_liar)
        self.n_ei_candidates = int(n_ei_candidates)
        self.warm_start = bool(warm_start)

    def make_sampler(self, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=self.worker_seed(ctx),
                n_startup_trials=self.n_startup_trials,
                multivariate=self.multivariate,
                constant_liar=self.constant_liar,
                n_ei_candidates=self.n_ei_candidates,
                **sampler_constraint_kwargs(),
            )


__all__ = [
    "CONSTRAINT",
    "HAS_SET_CONSTRAINT",
    "OptunaAgentBase",
    "agent_seed",
    "frozen_constraint_kwargs",
    "sampler_constraint_kwargs",
    "set_trial_constraint",
    "TPEAgent",
    "precision_params",
    "ratio_params",
    "snap_up",
    "uniform_for_budget",
]
