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
from typing import Any

import optuna

from . import store
from .store import GRID_STEP

log = logging.getLogger(__name__)

Listener = Callable[[str, Any, int], None]  # (agent, EvalResult, trial number)


class SearchContext:
    """The search job as seen by an agent.

    :param evaluator: an `envs.evaluator.PolicyEvaluator` (or anything with its interface)
    :param budgets_ms: latency budgets in milliseconds (the job's budgets, resolved)
    :param storage: an Optuna storage URL (journal file path or RDB URL) or storage object
    :param job_name: studies are named `<job_name>/<agent>`
    """

    def __init__(
        self,
        evaluator: Any,
        budgets_ms: Sequence[float],
        *,
        storage: str | optuna.storages.BaseStorage,
        job_name: str,
        out_dir: str | Path,
        seed: int = 0,
        grid_step: float = GRID_STEP,
        budget_labels: Sequence[str] | None = None,
        reward: str = "constrained",
        max_ratio: float | None = None,
        latency_source: str | None = None,
        agent_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.budgets_ms = [float(b) for b in budgets_ms]
        self.budget_labels = list(budget_labels) if budget_labels else [f"{b:.4g}ms" for b in self.budgets_ms]
        self.seed = int(seed)
        self.out_dir = Path(out_dir)
        self.grid_step = float(grid_step)
        self.job_name = job_name
        self.reward_name = reward
        self.max_ratio = float(max_ratio if max_ratio is not None else getattr(evaluator, "max_ratio", 0.9))
        self.latency_source = latency_source or getattr(evaluator, "latency_source", "lut")
        self.agent_options = {k: dict(v) for k, v in (agent_options or {}).items()}
        self.storage = store.open_storage(storage) if isinstance(storage, str) else storage
        self.listeners: list[Listener] = []
        self._studies: dict[str, optuna.Study] = {}
        self._reward_fn: Callable[..., float] | None | bool = None
        self._fp_id: str | None = None
        self.attach_policies = True  # each trial's policy JSON as a trial artifact (runs/<name>/artifacts)
        self._artifacts: Any = None

    # --- groups and the grid ------------------------------------------------------------------
    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.evaluator.groups]

    def distributions(self) -> dict[str, optuna.distributions.FloatDistribution]:
        """The fixed search space every agent's trials share (per-group ratio on the grid)."""
        return store.distributions(self.group_names, self.max_ratio, self.grid_step)

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
        """Finished evaluations of the agent so far (all processes): what resume counts."""
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
        trial: Any = None,
        *,
        reward: float | None = None,
        budget_ms: float | None = None,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> Any:
        """Evaluate a policy (EvalResult) and record it as a trial of the agent's study."""
        result = self.evaluator.evaluate(self.ratios_dict(ratios))
        self.record(agent_name, result, trial, reward=reward, budget_ms=budget_ms, extra_attrs=extra_attrs)
        return result

    def record(
        self,
        agent_name: str,
        result: Any,
        trial: Any = None,
        *,
        reward: float | None = None,
        budget_ms: float | None = None,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> int:
        """Record an evaluation.

        Without `trial`, a COMPLETE trial is added to the agent's study right away. With a live
        `optuna.Trial` (ask/tell or `study.optimize`), its user attrs are set and the agent tells
        the values itself (`[result.accuracy, result.latency_ms]`). Returns the trial number.
        """
        attrs = self.user_attrs(agent_name, result, reward=reward, budget_ms=budget_ms)
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
                self.distributions(),
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

    def values(self, result: Any) -> list[float]:
        return [float(result.accuracy), float(result.latency_ms)]

    def params(self, result: Any) -> dict[str, float]:
        """Grid params of an evaluated policy (what a trial of it holds)."""
        ratios = result.policy.requested()
        return {n: self.snap(ratios[n]) for n in self.group_names}

    def user_attrs(
        self, agent_name: str, result: Any, *, reward: float | None = None, budget_ms: float | None = None
    ) -> dict[str, Any]:
        budget = float(budget_ms) if budget_ms is not None else (self.budgets_ms[0] if self.budgets_ms else None)
        if reward is None:
            reward = self.reward(result, budget)
        policy = result.policy.to_dict()
        policy["metrics"] = dict(policy.get("metrics") or {}) | {
            "accuracy": float(result.accuracy),
            "latency_ms": float(result.latency_ms),
            "latency_source": self.latency_source,
            "lut_latency_ms": _num(getattr(result, "lut_latency_ms", None)),
            "live_latency_ms": _num(getattr(result, "live_latency_ms", None)),
        }
        return {
            "macs": _int(getattr(result, "macs", None)),
            "params": _int(getattr(result, "params", None)),
            "latency_source": self.latency_source,
            "lut_latency_ms": _num(getattr(result, "lut_latency_ms", None)),
            "live_latency_ms": _num(getattr(result, "live_latency_ms", None)),
            "reward": _num(reward),
            "latency_kind": getattr(result, "latency_kind", None)
            or ("live" if getattr(result, "live_latency_ms", None) is not None and self.latency_source != "lut" else "lut"),
            "budget_ms": _num(budget),
            "agent": agent_name,
            "seed": self.seed,
            "device_fingerprint": self.fingerprint_id(),
            "policy": json.dumps(policy, separators=(",", ":"), allow_nan=False, default=_json_default),
        }

    # --- reward and device ------------------------------------------------------------------------
    def reward(self, result: Any, budget_ms: float | None) -> float | None:
        """The job's reward for a result (envs.rewards), or None when it cannot be computed."""
        if budget_ms is None:
            return None
        if self._reward_fn is None:
            self._reward_fn = _resolve_reward(self.reward_name) or False
        if not self._reward_fn:
            return None
        try:
            return float(_call_reward(self._reward_fn, result, budget_ms, self.evaluator))
        except Exception:
            log.debug("reward %s failed", self.reward_name, exc_info=True)
            return None

    def fingerprint_id(self) -> str | None:
        if self._fp_id is None and getattr(self.evaluator, "fingerprint_id", None):
            self._fp_id = str(self.evaluator.fingerprint_id)
        if self._fp_id is None:
            fp = getattr(self.evaluator, "fingerprint", None)
            try:
                from hwprofiler import fingerprint_id

                self._fp_id = fingerprint_id(fp) if fp else ""
            except Exception:
                self._fp_id = str(hash(json.dumps(fp, sort_keys=True, default=str))) if fp else ""
        return self._fp_id or None


def _resolve_reward(name: str) -> Callable[..., float] | None:
    try:
        from envs import rewards
    except Exception:
        return None
    for attr in ("get_reward", "make_reward", "reward_fn"):
        getter = getattr(rewards, attr, None)
        if callable(getter):
            try:
                fn = getter(name)
                if callable(fn):
                    return fn
            except Exception:
                pass
    table = getattr(rewards, "REWARDS", None)
    if isinstance(table, Mapping) and name in table:
        return table[name]
    fn = getattr(rewards, name, None)
    return fn if callable(fn) else None


def _call_reward(fn: Callable[..., float], result: Any, budget_ms: float, evaluator: Any) -> float:
    dense_for = getattr(evaluator, "dense_latency_for", None)  # the dense latency of the same kind (live or LUT)
    dense_ms = dense_for(result) if dense_for is not None else getattr(evaluator, "dense_latency_ms", None)
    kwargs = {
        "accuracy": float(result.accuracy),
        "latency_ms": float(result.latency_ms),
        "budget_ms": float(budget_ms),
        "dense_accuracy": getattr(evaluator, "dense_accuracy", None),
        "dense_latency_ms": dense_ms,
    }
    import inspect

    try:
        sig = inspect.signature(fn)
        accepted = {k: v for k, v in kwargs.items() if k in sig.parameters}
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            accepted = kwargs
        return fn(**accepted)
    except TypeError:
        return fn(float(result.accuracy), float(result.latency_ms), float(budget_ms))


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _json_default(o: Any) -> Any:
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)
