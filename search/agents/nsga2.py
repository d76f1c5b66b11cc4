"""NSGA-II baseline: a Pareto set of (accuracy, latency) policies that answers every budget at once.

Optuna's `NSGAIISampler` (seeded) on the job's shared study form (directions [maximize accuracy,
minimize latency_ms], per-group ratios on the grid). The loosest budget is a constraint
(`trial.set_constraint`, Optuna 5): NSGA-II's constrained domination ranks feasible trials first,
so the population converges onto the front below the loosest budget, where every budget's best
trial lives. Like TPE, the first generation starts from the uniform policy that meets each budget
(warm start) and the rest is random; ask/tell, so several workers can share the study.

The population defaults to about a quarter of the evaluations (8..50), so a short search still
gets a few generations of selection, crossover and mutation.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import optuna

from .rungs import RungGate
from .tpe import OptunaAgentBase, sampler_constraint_kwargs

if TYPE_CHECKING:
    from ..context import SearchContext


class NSGA2Agent(OptunaAgentBase):
    """NSGA-II over per-group ratios.

    :param population_size: individuals per generation (default: evals/4 clipped to [8, 50])
    :param crossover: "uniform" (Optuna's default), "blxalpha", "sbx" or "undx"
    :param mutation_prob: per-parameter mutation probability (default 1/len(params))
    :param pruner, reduction_factor: multi-fidelity over the proxy ladder (`search.agents.rungs.RungGate`);
        pruned trials take no part in selection (NSGA-II reads COMPLETE trials)
    """

    name = "nsga2"

    def __init__(
        self,
        population_size: int | None = None,
        crossover: str = "uniform",
        crossover_prob: float = 0.9,
        swapping_prob: float = 0.5,
        mutation_prob: float | None = None,
        warm_start: bool = True,
        pruner: str = "sh",
        reduction_factor: int = 3,
    ) -> None:
        self.gate = RungGate(pruner, reduction_factor)
        self.population_size = population_size
        self.crossover = crossover
        self.crossover_prob = float(crossover_prob)
        self.swapping_prob = float(swapping_prob)
        self.mutation_prob = mutation_prob
        self.warm_start = bool(warm_start)
        self._evals = 0

    def run(self, ctx: SearchContext, n_evals: int) -> None:
        # the job's total: the same in every worker and on resume
        self._evals = ctx.job.evals if ctx.job is not None else int(n_evals) + ctx.finished(self.name)
        super().run(ctx, n_evals)

    def pop_size(self, ctx: SearchContext | None = None) -> int:
        """The population: given, else a quarter of the evaluations (of those expected to complete,
        about 1 in reduction_factor, when a pruner stops the rest at a cheap rung), within 8..50."""
        if self.population_size:
            return int(self.population_size)
        complete = self._evals // (self.gate.eta if ctx is not None and self.gate.active(ctx) else 1)
        return int(min(50, max(8, complete // 4)))

    def make_sampler(self, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        from optuna.samplers import nsgaii

        crossovers = {
            "uniform": nsgaii.UniformCrossover,
            "blxalpha": nsgaii.BLXAlphaCrossover,
            "sbx": nsgaii.SBXCrossover,
            "undx": nsgaii.UNDXCrossover,
        }
        if self.crossover not in crossovers:
            from hilprune.errors import HilpruneError

            raise HilpruneError(f"nsga2: unknown crossover {self.crossover!r}; choose from {', '.join(crossovers)}")
        crossover = (
            crossovers[self.crossover](self.swapping_prob) if self.crossover == "uniform" else crossovers[self.crossover]()
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna 4's constraints_func
            return optuna.samplers.NSGAIISampler(
                population_size=self.pop_size(ctx),
                mutation_prob=self.mutation_prob,
                crossover=crossover,
                crossover_prob=self.crossover_prob,
                swapping_prob=self.swapping_prob,
                seed=self.worker_seed(ctx),
                **sampler_constraint_kwargs(),
            )


__all__ = ["NSGA2Agent"]
