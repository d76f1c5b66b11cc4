"""The search-agent protocol: something that spends evaluations on a SearchContext."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..context import SearchContext


@runtime_checkable
class SearchAgent(Protocol):
    """A search agent.

    `run(ctx, n_evals)` makes (at most) `n_evals` more evaluations, each recorded as one trial of
    the study `ctx.study(self.name)` (through `ctx.evaluate` / `ctx.record`). It is called again
    with the remaining count when a job is resumed, so it derives any state it needs from the
    trials already in the study (and from `ctx.seed`), never from memory of an earlier run.

    An agent whose evaluations may run in several processes at once on the same study (Optuna
    samplers) sets `supports_workers = True`; the runner then honours `--workers N`.
    """

    name: str
    supports_workers: bool

    def run(self, ctx: SearchContext, n_evals: int) -> None: ...
