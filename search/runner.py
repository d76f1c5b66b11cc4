"""Run a search job: every agent gets `evals - finished` more evaluations.

Resume is the default: rerunning the same command (or `hilprune search --job runs/<name>/job.toml`)
continues each agent from the trials already in storage. Each evaluation is committed to the
storage the moment it finishes (one journal line), so Ctrl-C or `kill -9` loses at most the
evaluation in flight. A run directory holds:

    job.toml        the resolved job
    dense.json      the dense reference and each budget resolved (search.rundir)
    study.journal   the trials (default storage)
    best/<budget>.json, pareto.png, report.md, summary.json   (written by search.report)
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from envs.interface import Evaluator
from hilprune.errors import HilpruneError

from . import store
from .agents import load_factory, make_agent
from .agents.base import SearchAgent
from .context import SearchContext
from .job import DEFAULT_PRECISION, JOB_FILE, Job, check_compatible, load_run_job, remove_blocks_arg
from .progress import AgentBars, resume_note, stderr_console
from .rundir import DENSE_FILE, dense_reference, job_budgets, read_dense

log = logging.getLogger(__name__)

LOCK_FILE = ".search.lock"


# --- the job lock -------------------------------------------------------------------------------
@contextmanager
def job_lock(out_dir: Path) -> Iterator[None]:
    """Only one `hilprune search` per run directory (its worker processes excepted).

    An flock: released by the kernel when the holder dies, even by kill -9.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = Path(path).read_text().strip() or "?"
            raise HilpruneError(
                f"another 'hilprune search' (pid {other}) is running the job in {out_dir}; wait for it, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


# --- evaluator and dense reference ------------------------------------------------------------
def build_evaluator(job: Job, progress: bool = False) -> Evaluator:
    import torch

    torch.set_num_threads(1)
    try:
        from envs.evaluator import PolicyEvaluator
    except ImportError as exc:
        raise HilpruneError(f"the policy evaluator (envs.evaluator) is not available: {exc}") from None
    kwargs: dict[str, Any] = dict(
        dataset=job.dataset,
        device=job.device,
        checkpoint=job.checkpoint,
        input_shape=job.input_shape,
        num_classes=job.num_classes,
        latency_source=job.latency_source,
        max_ratio=job.max_ratio,
        round_to=job.round_to,
        importance=job.importance,
        data_dir=job.data_dir,
        seed=job.seed,
        precision=job.precision or DEFAULT_PRECISION,
    )
    if job.proxy is not None:
        kwargs["proxy"] = job.proxy
    if job.val_size is not None:
        kwargs["val_size"] = job.val_size
    if job.remove_blocks:
        kwargs["remove_blocks"] = remove_blocks_arg(job)
    return PolicyEvaluator(job.model, progress=progress, **kwargs)


def make_context(job: Job, evaluator: Evaluator, dense: dict[str, Any], worker_index: int = 0) -> SearchContext:
    resolved = job_budgets(dense)
    budgets = [resolved[label] for label in job.budgets]
    for b in budgets:  # the hybrid latency rule measures live what may win a budget
        evaluator.add_budget(b)
    return SearchContext(
        evaluator,
        budgets,
        storage=job.storage_url,
        job_name=job.name,
        out_dir=job.out,
        seed=job.seed + worker_index,
        reward=job.reward,
        max_ratio=job.max_ratio,
        latency_source=job.latency_source,
        agent_options=job.agent_options,
        job=job,
        worker_index=worker_index,
        evaluator_factory=functools.partial(build_evaluator, job),
    )


# --- running ------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    job: Job
    summary: dict[str, Any]
    ran: dict[str, int] = field(default_factory=dict)  # agent -> evaluations made by this run
    failed: dict[str, str] = field(default_factory=dict)  # agent -> error
    short: dict[str, int] = field(default_factory=dict)  # agent -> evaluations it left unused


def prepare_job_dir(job: Job) -> None:
    out = Path(job.out)
    if (out / JOB_FILE).is_file():
        check_compatible(job, load_run_job(out))
    job.write()


def check_agents(job: Job) -> None:
    for name in job.agents:
        load_factory(name)  # raises a one-line HilpruneError when the agent cannot be imported


def run_search(job: Job, *, progress: bool = True, console: Console | None = None) -> RunOutcome:
    """Run (or continue) `job`; returns its summary (see search.report). Progress and messages go
    to `console` (default: stderr). A job of several devices runs once per device, each in its own
    run directory, and its summary puts the devices side by side."""
    if len(job.devices) > 1:
        return _run_devices(job, progress=progress, console=console)
    import torch

    import hwprofiler

    torch.set_num_threads(1)
    console = console or stderr_console()
    hwprofiler.usable_device(job.device)  # a device this host cannot be stops the search before anything is written
    out = Path(job.out)
    with job_lock(out):
        prepare_job_dir(job)
        check_agents(job)
        store.repair_journal(job.storage_url)
        with _status(console, progress, f"loading {job.model}, measuring the dense model on {job.device}"):
            evaluator = build_evaluator(job, progress=progress)
            dense = dense_reference(job, evaluator)
        ctx = make_context(job, evaluator, dense)
        outcome = RunOutcome(job, {})
        found: dict[str, int] = {}
        for name in job.agents:
            store.fail_stale_running(ctx.study(name))  # left by a killed run; no other process holds this job
            found[name] = ctx.finished(name)
        note = resume_note(found, job.evals)
        if note and progress:
            console.print(note)
        bars = AgentBars(ctx, list(job.agents), job.evals, console) if progress else None
        with bars or contextlib.nullcontext(), _interrupt_note(console, job):
            for name in job.agents:
                remaining = max(0, job.evals - found[name])
                if remaining <= 0:
                    continue
                before = ctx.finished(name)
                if bars is not None:
                    bars.start(name)
                try:
                    agent = make_agent(name, **job.agent_options.get(name, {}))
                    if job.workers > 1 and agent.supports_workers:
                        _run_parallel(job, ctx, agent, remaining, bars)
                    else:
                        if job.workers > 1:
                            log.info("agent %s runs in one process (--workers applies to Optuna agents)", name)
                        agent.run(ctx, remaining)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # one broken agent must not cost the others their turn
                    log.debug("agent %s failed", name, exc_info=True)
                    outcome.failed[name] = f"{type(exc).__name__}: {exc}"
                    console.print(f"[red]agent {name} failed:[/] {type(exc).__name__}: {exc}")
                after = ctx.finished(name)
                if bars is not None and name not in outcome.failed:
                    bars.refresh(name, final=True)
                outcome.ran[name] = after - before
                if after < job.evals and name not in outcome.failed:
                    outcome.short[name] = job.evals - after
        evaluator.flush()  # LUT entries measured during the search
        from .report import write_report

        outcome.summary = write_report(out, storage=ctx.storage, job=job, dense=dense)
    return outcome


def _run_devices(job: Job, *, progress: bool, console: Console | None) -> RunOutcome:
    """Each device's search in turn (a failing device does not stop the others), then the side-by-side report."""
    from .report import write_device_report

    console = console or stderr_console()
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / JOB_FILE).is_file():
        check_compatible(job, load_run_job(out))
    job.write()
    outcome = RunOutcome(job, {})
    for sub in job.per_device():
        if progress:
            console.print(f"[bold]device {sub.device}[/] -> {sub.out}")
        try:
            one = run_search(sub, progress=progress, console=console)
        except HilpruneError as exc:
            outcome.failed[sub.device] = str(exc)
            console.print(f"[red]device {sub.device} failed:[/] {exc}")
            continue
        outcome.ran |= {f"{sub.device}/{a}": n for a, n in one.ran.items()}
        outcome.failed |= {f"{sub.device}/{a}": e for a, e in one.failed.items()}
        outcome.short |= {f"{sub.device}/{a}": n for a, n in one.short.items()}
    outcome.summary = write_device_report(job)
    return outcome


@contextmanager
def _status(console: Console, enabled: bool, text: str) -> Iterator[None]:
    if not enabled:
        yield
        return
    with console.status(text):
        yield


@contextmanager
def _interrupt_note(console: Console, job: Job) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted[/]: finished evaluations are saved in {job.storage_url}; rerun the same command to continue"
        )
        raise


# --- several worker processes (Optuna agents) ----------------------------------------------------
def _shares(total: int, workers: int) -> list[int]:
    base, extra = divmod(total, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _run_parallel(job: Job, ctx: SearchContext, agent: SearchAgent, remaining: int, bars: AgentBars | None) -> None:
    """Split `remaining` evaluations over `job.workers` processes on the same storage."""
    shares = _shares(remaining, job.workers)
    procs = []
    for k, n in enumerate(shares[1:], start=1):
        if n <= 0:
            continue
        cmd = [sys.executable, "-m", "search.worker", str(job.out), "--agent", agent.name, "--evals", str(n), "--index", str(k)]
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
            OMP_NUM_THREADS="1",
        )
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent, stdout=subprocess.DEVNULL))
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(2.0):
            if bars is not None:
                try:
                    bars.refresh(agent.name)
                except Exception:  # a progress bar must never stop a search
                    log.debug("progress refresh failed", exc_info=True)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        if shares[0] > 0:
            agent.run(ctx, shares[0])
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    finally:
        stop.set()
    bad = [c for c in codes if c != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(procs)} worker process(es) failed (exit codes {bad}); rerun to resume")


def run_worker(run_dir: str | Path, agent_name: str, n_evals: int, index: int) -> None:
    """A worker process: same job, same storage, its share of one agent's evaluations."""
    import torch

    torch.set_num_threads(1)
    job = load_run_job(run_dir)
    dense = read_dense(Path(run_dir))
    if dense is None:
        raise HilpruneError(f"{run_dir}: no {DENSE_FILE}; start the job with 'hilprune search'")
    evaluator = build_evaluator(job)
    evaluator.use_reference(float(dense["latency_ms"]))
    ctx = make_context(job, evaluator, dense, worker_index=index)
    agent = make_agent(agent_name, **job.agent_options.get(agent_name, {}))
    try:
        agent.run(ctx, n_evals)
    finally:
        evaluator.flush()
