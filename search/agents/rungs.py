"""Multi-fidelity scoring for the Optuna agents: Optuna's pruners over the evaluator's proxy ladder.

The evaluator scores a policy at rungs of rising cost (`envs.fidelity`: ``bn:10`` then ``kd:40``).
Optuna's pruners (successive halving, Hyperband) decide from `trial.report`, which the job's
studies do not support (they are multi-objective: accuracy and latency). So beside its study an
agent keeps single-objective *rung studies* in the same storage, `<job>#rungs/<agent>/<budget>`
(maximize accuracy): each policy gets one trial there, reports its accuracy at rung i as
``trial.report(accuracy, step=eta**i)`` (the steps where the pruner, with `min_resource=1` and
reduction factor eta, holds rung i's promotion), and climbs to the next rung unless
`trial.should_prune()`.

- Policies compete within one budget: a policy's rung study is that of the tightest budget it
  meets (LUT latency at the first rung). A looser budget's policies are more accurate for being
  bigger; mixed in, they would prune every policy of a tighter one.
- A policy over every budget stops at the first rung and enters no rung study: no budget can use
  it, and its constraint (set on the agent's trial either way) tells the sampler so.
- A stopped policy is told PRUNED to the agent's study, with no values; its user attrs hold the
  rung it reached (`fidelity`), the accuracy there, the constraint and the cost. Best policies,
  Pareto fronts and compare tables read COMPLETE trials only, which were all scored at the top
  rung, so accuracies of different fidelities are never compared. TPE counts pruned trials in its
  "bad" group (infeasible ones ranked by violation); NSGA-II's selection ignores them. `--evals`
  counts policies, pruned or not.

Optuna's successive halving is asynchronous: the first policies of a rung study are promoted
when they are the best so far, later ones when they are in the top 1/eta of their rung.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

from hilprune.budget import Budget, within_budget
from hilprune.errors import HilpruneError

from .. import store

if TYPE_CHECKING:
    from envs.evaluator import EvalResult

    from ..context import SearchContext

PRUNERS = ("sh", "hyperband", "none")


class RungGate:
    """Scores a policy up the evaluator's ladder while the pruner lets it climb.

    :param pruner: ``sh`` (`SuccessiveHalvingPruner`), ``hyperband`` (`HyperbandPruner`) or ``none``
        (every policy straight to the top rung)
    :param reduction_factor: eta: about one policy in eta climbs each rung
    """

    def __init__(self, pruner: str = "sh", reduction_factor: int = 3) -> None:
        if pruner not in PRUNERS:
            raise HilpruneError(f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)}")
        if int(reduction_factor) < 2:
            raise HilpruneError(f"reduction_factor must be at least 2, got {reduction_factor!r}")
        self.pruner = pruner
        self.eta = int(reduction_factor)
        self._studies: dict[str, optuna.Study] = {}

    def active(self, ctx: SearchContext) -> bool:
        """Whether policies are scored rung by rung (a pruner, and a ladder of two rungs or more)."""
        return self.pruner != "none" and len(ctx.evaluator.ladder) > 1

    def step(self, rung: int) -> int:
        """The step rung `rung` is reported at: where the pruner holds that rung's promotion."""
        return int(self.eta**rung)

    def make_pruner(self, n_rungs: int) -> optuna.pruners.BasePruner:
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=self.step(n_rungs - 1), reduction_factor=self.eta)
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=self.eta, min_early_stopping_rate=0)

    @staticmethod
    def bucket(ctx: SearchContext, latency_ms: float) -> Budget | None:
        """The tightest of the job's budgets that `latency_ms` meets (None: over every one)."""
        met = [b for b in ctx.budgets if within_budget(latency_ms, b.ms)]
        return min(met, key=lambda b: b.ms) if met else None

    def study(self, ctx: SearchContext, agent: str, bucket: str) -> optuna.Study:
        name = store.rung_study_name(ctx.job_name, agent, bucket)
        if name not in self._studies:
            self._studies[name] = store.get_rung_study(ctx.storage, name, self.make_pruner(len(ctx.evaluator.ladder)))
        return self._studies[name]

    def score(
        self,
        ctx: SearchContext,
        agent: str,
        ratios: dict[str, float],
        trial_number: int,
        precision: dict[str, str] | None = None,
    ) -> tuple[EvalResult, dict[str, Any]]:
        """Score `ratios` (with `precision` marks in a mixed-precision search) rung by rung;
        returns the last result and attrs for the agent's trial (`pruned`: whether it stopped
        below the top rung)."""
        ev = ctx.evaluator
        ladder = [str(r) for r in ev.ladder]
        marks: dict[str, Any] = {} if precision is None else {"precision": precision}
        if not self.active(ctx):
            return ev.evaluate(ratios, **marks), {"pruned": False}
        result = ev.evaluate(ratios, fidelity=ladder[0], **marks)
        bucket = self.bucket(ctx, float(result.latency_ms))
        if bucket is None:
            return result, {"pruned": True, "pruned_at": ladder[0], "pruned_why": "over every budget"}
        study = self.study(ctx, agent, bucket.label)
        rt = study.ask()
        rt.set_user_attr("trial", int(trial_number))
        try:
            for i, fid in enumerate(ladder):
                if i:
                    result = ev.evaluate(ratios, fidelity=fid, **marks)
                acc = result.accuracy_at(fid)
                if acc is None:  # answered from the cache at a dearer rung: no value to compare at this one
                    continue
                rt.report(float(acc), step=self.step(i))
                if i < len(ladder) - 1 and rt.should_prune():
                    study.tell(rt, state=optuna.trial.TrialState.PRUNED)
                    return result, {"pruned": True, "pruned_at": fid, "pruned_why": "pruner", "rung_bucket": bucket.label}
        except BaseException:
            study.tell(rt, state=optuna.trial.TrialState.FAIL)
            raise
        study.tell(rt, float(result.accuracy))
        return result, {"pruned": False, "rung_bucket": bucket.label}


__all__ = ["PRUNERS", "RungGate"]
