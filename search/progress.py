"""What a person watching a search sees on stderr: one progress bar per agent, started when that
agent starts (agents run one after another, so a bar's elapsed time and ETA are its own), and
the best accuracy within the first budget so far. When stderr is not a terminal (a log file, CI),
where rich draws nothing until the end, a plain line is printed at every tenth of an agent's
evaluations instead, with its elapsed time and the time left."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from envs.evaluator import EvalResult
from envs.fidelity import parse_fidelity
from hilprune.budget import within_budget

from .context import SearchContext


def stderr_console() -> Console:
    return Console(stderr=True)


class AgentBars:
    """Rich progress bars for the agents of a job, fed by the context's listener."""

    def __init__(self, ctx: SearchContext, agents: list[str], evals: int, console: Console) -> None:
        self.ctx, self.evals = ctx, evals
        self.progress = Progress(
            TextColumn("[bold]{task.fields[agent]:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best val acc @{task.fields[budget]} {task.fields[best]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.console = console
        self.b0 = ctx.budgets_ms[0] if ctx.budgets_ms else float("inf")
        self.best: dict[str, float] = {}
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, tuple[float, int]] = {}  # agent -> (monotonic start, trials done then)
        self.next_line: dict[str, int] = {}  # plain-line mode: the count at which the next line is due
        self.printed: dict[str, int] = {}  # plain-line mode: the count of the last line printed
        label = ctx.budget_labels[0] if ctx.budget_labels else "-"
        for name in agents:
            done = ctx.finished(name)
            recs = [r for r in ctx.records(name) if within_budget(r.latency_ms, self.b0)]
            if recs:
                self.best[name] = max(r.accuracy for r in recs)
            self.tasks[name] = self.progress.add_task(
                name, total=evals, completed=min(done, evals), agent=name, budget=label, best=self._best(name), start=False
            )

    def _best(self, agent: str) -> str:
        return f"{self.best[agent]:.4f}" if agent in self.best else "-"

    def on_record(self, agent: str, result: EvalResult, number: int) -> None:
        if agent not in self.tasks:
            return
        # a policy pruned at a cheap rung has an accuracy of another fidelity: not comparable
        top = parse_fidelity(result.fidelity) >= self.ctx.evaluator.ladder[-1]
        if top and within_budget(result.latency_ms, self.b0) and float(result.accuracy) > self.best.get(agent, -1.0):
            self.best[agent] = float(result.accuracy)
        self.progress.update(self.tasks[agent], advance=1, best=self._best(agent))
        self._plain_line(agent)

    def start(self, agent: str) -> None:
        """The agent begins: its clock starts now."""
        self.progress.start_task(self.tasks[agent])
        done = int(self.progress.tasks[self.tasks[agent]].completed)
        self.started[agent] = (time.monotonic(), done)
        self.next_line[agent] = done + max(1, self.evals // 10)

    def _plain_line(self, agent: str) -> None:
        """Without a terminal: 'tpe: 12/60, best val acc @0.6 0.8312, 1m20s, about 5m20s left'."""
        if self.console.is_terminal or agent not in self.started:
            return
        done = int(self.progress.tasks[self.tasks[agent]].completed)
        if done == self.printed.get(agent) or (done < self.next_line[agent] and done < self.evals):
            return
        self.printed[agent] = done
        self.next_line[agent] = done + max(1, self.evals // 10)
        t0, done0 = self.started[agent]
        spent = time.monotonic() - t0
        left = spent / (done - done0) * (self.evals - done) if done > done0 else None
        eta = f", about {_duration(left)} left" if left is not None and done < self.evals else ""
        label = self.ctx.budget_labels[0] if self.ctx.budget_labels else "-"
        self.console.print(
            f"{agent}: {done}/{self.evals}, best val acc @{label} {self._best(agent)}, {_duration(spent)}{eta}",
            highlight=False,
            soft_wrap=True,
        )

    def refresh(self, agent: str, final: bool = False) -> None:
        """Poll the storage (workers write trials this process never sees)."""
        done = min(self.evals, self.ctx.finished(agent))
        if final and done < self.evals:  # an agent that stopped early (uniform): a full bar of what it did
            self.progress.update(self.tasks[agent], total=max(1, done), completed=done)
        else:
            self.progress.update(self.tasks[agent], completed=done)
            self._plain_line(agent)
        if final:
            self.progress.stop_task(self.tasks[agent])

    def __enter__(self) -> AgentBars:
        self.ctx.listeners.append(self.on_record)
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)
        self.ctx.listeners.remove(self.on_record)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def resume_note(found: dict[str, int], evals: int) -> str | None:
    """'resuming: 18 of 20 uniform, 4 of 20 ppo' when any agent has finished trials, else None."""
    if not any(found.values()):
        return None
    return "resuming: " + ", ".join(f"{n} of {evals} {agent}" for agent, n in found.items())
