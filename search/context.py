"""What a search agent gets: the evaluator, the budgets, the job's studies and a way to record.

Every evaluated policy becomes one COMPLETE trial in the agent's study (`<job>/<agent>`), written
the moment the evaluation finishes, so a killed search loses at most the evaluation in flight.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from envs import rewards
from envs.evaluator import EvalResult
from envs.interface import Evaluator
from hilprune.budget import Budget

from . import store
from .store import GRID_STEP

if TYPE_CHECKING:
    from .job import Job

log = logging.getLogger(__name__)

Listener = Callable[[str, EvalResult, int], None]  # (agent, result, trial number)


class SearchContext:
    """The search job as seen by an agent.

    :param evaluator: the job's evaluator (`envs.interface.Evaluator`)
    :param budgets: the job's budgets, resolved against its dense reference
    :param storage: an Optuna storage URL (journal file path or RDB URL) or storage object
    :param job_name: studies are named `<job_name>/<agent>`
    :param job: the resolved job
    :param worker_index: 0 for the process that runs the job, k for its k-th worker process
    :param evaluator_factory: builds another evaluator like `evaluator` in a new process (picklable;
        environments in worker processes use it)
    """

    def __init__(
        self,
        evaluator: Evaluator,
        budgets: Sequence[Budget],
        *,
        storage: str | optuna.storages.BaseStorage,
        job_name: str,
        out_dir: str | Path,
        seed: int = 0,
        grid_step: float = GRID_STEP,
        reward: str = "constrained",
        max_ratio: float | None = None,
        latency_source: str | None = None,
        agent_options: Mapping[str, Mapping[str, Any]] | None = None,
        job: Job | None = None,
        worker_index: int = 0,
        evaluator_factory: Callable[[], Evaluator] | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.budgets = list(budgets)
        self.job = job
        self.worker_index = int(worker_index)
        self.evaluator_factory = evaluator_factory
        self.seed = int(seed)
        self.out_dir = Path(out_dir)
        self.grid_step = float(grid_step)
        self.job_name = job_name
        self.reward_name = rewards.canonical(reward)
        self.max_ratio = float(max_ratio if max_ratio is not None else evaluator.max_ratio)
        self.latency_source = latency_source or evaluator.latency_source
        self.agent_options = {k: dict(v) for k, v in (agent_options or {}).items()}
        self.storage = store.open_storage(storage) if isinstance(storage, str) else storage
        self.listeners: list[Listener] = []
        self._studies: dict[str, optuna.Study] = {}
        self.attach_policies = True  # each trial's policy JSON as a trial artifact (runs/<name>/artifacts)
        self._artifacts: Any = None

    @property
    def budgets_ms(self) -> list[float]:
        return [b.ms for b in self.budgets]

    @property
    def budget_labels(self) -> list[str]:
        return [b.label for b in self.budgets]

    def budget_for(self, ms: float) -> Budget | None:
        """The job's budget of `ms` milliseconds (None when it has none)."""
        return next((b for b in self.budgets if math.isclose(b.ms, ms, rel_tol=1e-9)), None)

    # --- groups and the grid ------------------------------------------------------------------
    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.evaluator.groups]

    def distributions(self) -> dict[str, optuna.distributions.FloatDistribution]:
        """The fixed search space every agent's trials share (per-group ratio on the grid)."""
        return store.distributions(self.group_names, self.max_ratio, self.grid_step)

    @property
    def mixed_precision(self) -> bool:
        """Whether agents mark each group fp32 or int8 (`--precision mixed`, `envs.precision`)."""
        precision = getattr(self.evaluator, "precision", None)
        return getattr(precision, "mode", "fp32") == "mixed"

    def precision_distributions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        """The per-group precision params of a mixed-precision search (none otherwise)."""
        if not self.mixed_precision:
            return {}
        return store.precision_distributions(self.group_names)

    def snap(self, ratio: float) -> float:
        return store.snap(ratio, self.max_ratio, self.grid_step)

    def ratios_dict(self, ratios: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
        """Ratios by group name, in group order, clipped to [0, max_ratio]."""
        names = self.group_names
        if isinstance(ratios, Mapping):
            missing = [n for n in names if n not in ratios]
            if missing:
                raise ValueError(f"ratios missing for group(s) {', '.join(missing)}")
            vals = [ratios[n] for n in names]
        else:
            vals = [float(r) for r in ratios]
            if len(vals) != len(names):
                raise ValueError(f"expected {len(names)} ratios (one per group), got {len(vals)}")
        return {n: min(self.max_ratio, max(0.0, float(v))) for n, v in zip(names, vals)}

    # --- studies ----------------------------------------------------------------------------------
    def study_name(self, agent_name: str) -> str:
        return store.study_name(self.job_name, agent_name)

    def study(self, agent_name: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        """The agent's study (created on first use). With `sampler`, a fresh handle using it."""
        if sampler is not None:
            return store.get_study(self.storage, self.study_name(agent_name), sampler=sampler)
        if agent_name not in self._studies:
            self._studies[agent_name] = store.get_study(self.storage, self.study_name(agent_name))
        return self._studies[agent_name]

    def finished(self, agent_name: str) -> int:
        """Finished evaluations of the agent so far (all processes; pruned ones too): what resume counts."""
        return store.finished_count(self.study(agent_name))

    def records(self, agent_name: str) -> list[store.TrialRecord]:
        study = self.study(agent_name)
        return [
            store.record_from_trial(agent_name, t)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        ]

    # --- evaluation and recording ---------------------------------------------------------------
    def evaluate(
        self,
        agent_name: str,
        ratios: Mapping[str, float] | Sequence[float],
        trial: optuna.Trial | None = None,
        *,
        reward: float | None = None,
        budget: Budget | None = None,
        extra_attrs: Mapping[str, Any] | None = None,
        precision: Mapping[str, str] | None = None,
    ) -> EvalResult:
        """Evaluate a policy and record it as a trial of the agent's study (`precision`: its
        groups' marks in a mixed-precision search)."""
        if precision is not None:
            result = self.evaluator.evaluate(self.ratios_dict(ratios), precision=precision)
        else:
            result = self.evaluator.evaluate(self.ratios_dict(ratios))
        self.record(agent_name, result, trial, reward=reward, budget=budget, extra_attrs=extra_attrs)
        return result

    def record(
        self,
        agent_name: str,
        result: EvalResult,
        trial: optuna.Trial | None = None,
        *,
        reward: float | None = None,
        budget: Budget | None = None,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> int:
        """Record an evaluation.

        Without `trial`, a COMPLETE trial is added to the agent's study right away. With a live
        `optuna.Trial` (ask/tell or `study.optimize`), its user attrs are set and the agent tells
        the values itself (`[result.accuracy, result.latency_ms]`). `budget` is the one the policy
        was aimed at (default: the job's first). Returns the trial number.
        """
        attrs = self.user_attrs(agent_name, result, reward=reward, budget=budget)
        if extra_attrs:
            attrs.update(extra_attrs)
        link = self._policy_artifact(attrs["policy"])
        if trial is not None:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            if link is not None:
                trial.storage.set_trial_system_attr(trial._trial_id, *link)
            number = int(trial.number)
        else:
            number = store.add_complete_trial(
                self.study(agent_name),
                self.values(result),
                self.params(result),
                {**self.distributions(), **self.precision_distributions()},
                attrs,
                dict([link]) if link else None,
            )
        for fn in list(self.listeners):
            try:
                fn(agent_name, result, number)
            except Exception:  # a progress bar must never lose a trial
                log.debug("listener failed", exc_info=True)
        return number

    def _policy_artifact(self, policy_json: str) -> tuple[str, str] | None:
        if not self.attach_policies:
            return None
        try:
            if self._artifacts is None:
                self._artifacts = store.artifact_store(self.out_dir)
            return store.write_artifact(self._artifacts, policy_json.encode(), "policy.json")
        except OSError as exc:
            log.warning("could not write the policy artifact: %s", exc)
            self.attach_policies = False
            return None

    def values(self, result: EvalResult) -> list[float]:
        return [float(result.accuracy), float(result.latency_ms)]

    def params(self, result: EvalResult) -> dict[str, Any]:
        """Grid params of an evaluated policy (what a trial of it holds)."""
        ratios = result.policy.requested()
        params: dict[str, Any] = {n: self.snap(ratios[n]) for n in self.group_names}
        if self.mixed_precision:
            marks = result.policy.precisions()
            params |= {store.precision_param(n): marks[n] for n in self.group_names}
        return params

    def user_attrs(
        self, agent_name: str, result: EvalResult, *, reward: float | None = None, budget: Budget | None = None
    ) -> dict[str, Any]:
        budget = budget if budget is not None else (self.budgets[0] if self.budgets else None)
        if reward is None and budget is not None:
            reward = self.reward(result, budget)
        policy = result.policy.to_dict()
        policy["metrics"] = dict(policy.get("metrics") or {}) | {
            "accuracy": float(result.accuracy),
            "latency_ms": float(result.latency_ms),
            "latency_source": self.latency_source,
            "lut_latency_ms": _num(result.lut_latency_ms),
            "live_latency_ms": _num(result.live_latency_ms),
            "live_ratio": _num(result.live_ratio),
            "fidelity": result.fidelity,
        }
        return {
            "fidelity": result.fidelity,
            "fidelity_cost_s": _num(result.fidelity_cost_s),
            "rungs": [[f, _num(a)] for f, a in result.rungs],
            "cached": bool(result.cached),
            "macs": int(result.macs),
            "params": int(result.params),
            "latency_source": self.latency_source,
            "lut_latency_ms": _num(result.lut_latency_ms),
            "live_latency_ms": _num(result.live_latency_ms),
            "live_ratio": _num(result.live_ratio),
            "reward": _num(reward),
            "latency_kind": result.latency_kind,
            "budget_ms": None if budget is None else budget.ms,
            "budget": None if budget is None else budget.label,
            "agent": agent_name,
            "seed": self.seed,
            "device_fingerprint": self.evaluator.fingerprint_id,
            "policy": json.dumps(policy, separators=(",", ":"), allow_nan=False, default=_json_default),
        }

    # --- reward ------------------------------------------------------------------------------------
    def reward(self, result: EvalResult, budget: Budget) -> float | None:
        """The job's reward (envs.rewards) for a result aimed at `budget`; None when it is undefined
        (e.g. a reward that needs a positive latency)."""
        ev = self.evaluator
        try:
            value, _parts = rewards.compute(
                self.reward_name,
                float(result.accuracy),
                float(result.latency_ms),
                budget.ms,
                ev.dense_accuracy,
                ev.dense_latency_for(result),
            )
        except ValueError:
            log.debug("reward %s undefined for this result", self.reward_name, exc_info=True)
            return None
        return float(value)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _json_default(o: Any) -> Any:
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)
