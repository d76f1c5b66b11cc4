"""Run a search job: every agent gets `evals - finished` more evaluations.

Resume is the default: rerunning the same command (or `hilprune search --job runs/<name>/job.toml`)
continues each agent from the trials already in storage. Each evaluation is committed to the
storage the moment it finishes (one journal line), so Ctrl-C or `kill -9` loses at most the
evaluation in flight. A run directory holds:

    job.toml        the resolved job
    dense.json      the dense model's accuracy and latency, and each budget in ms (fixed at the first run)
    study.journal   the trials (default storage)
    best/<budget>.json, pareto.png, report.md, summary.json   (written by search.report)
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hilprune.errors import HilpruneError

from . import store
from .agents import load_factory, make_agent
from .context import SearchContext
from .job import JOB_FILE, Job, check_compatible, load_run_job

log = logging.getLogger(__name__)

DENSE_FILE = "dense.json"
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
def build_evaluator(job: Job) -> Any:
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
    )
    if job.val_size is not None:
        kwargs["val_size"] = job.val_size
    return PolicyEvaluator(job.model, **kwargs)


def read_dense(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / DENSE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def weights_id(checkpoint: str | None) -> str:
    """What the dense weights were: 'sha256:<first 16>' of the checkpoint file, or the seeded random init."""
    if not checkpoint:
        return "random-init"
    import hashlib

    return "sha256:" + hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:16]


CREATED_FORMAT = "%Y-%m-%dT%H:%M:%S"  # dense.json's "created" (local time)


def dense_reference(job: Job, evaluator: Any) -> dict[str, Any]:
    """dense.json: the dense model's numbers and each budget in ms, fixed at the job's first run.

    Budgets given as fractions are turned into milliseconds once, from the dense latency measured
    then, so resumed runs and worker processes judge trials by the same budgets.
    """
    out_dir = Path(job.out)
    dense = read_dense(out_dir) or {}
    weights = weights_id(getattr(getattr(evaluator, "spec", None), "checkpoint", None))
    if dense and dense.get("weights", weights) != weights:
        raise HilpruneError(
            f"{out_dir} was searched with other weights ({dense['weights']}, now {weights}: a shipped "
            "checkpoint appeared or changed); use another --out to search these weights"
        )
    fp = getattr(evaluator, "fingerprint", None) or {}
    fp_id = _fp_id(fp)
    if dense and dense.get("fingerprint_id") and fp_id and dense["fingerprint_id"] != fp_id:
        log.warning(
            "the device fingerprint changed since this job started (%s -> %s); budgets keep their first values",
            dense["fingerprint_id"],
            fp_id,
        )
    if not dense:
        names = [g.name for g in evaluator.groups]
        lut_dense = getattr(evaluator, "dense_lut_latency_ms", None)
        if lut_dense is None:
            try:
                lut_dense = float(evaluator.predict_latency({n: 0.0 for n in names}))
            except Exception:
                lut_dense = None
        if lut_dense is not None and not math.isfinite(float(lut_dense)):
            lut_dense = None
        dense = {
            "model": job.model,
            "dataset": job.dataset,
            "device": job.device,
            "accuracy": float(evaluator.dense_accuracy),
            "latency_ms": float(evaluator.dense_latency_ms),
            "lut_latency_ms": lut_dense,
            "macs": _maybe_int(getattr(evaluator, "dense_macs", None)),
            "latency_source": job.latency_source,
            "groups": names,
            "fingerprint": fp,
            "fingerprint_id": fp_id,
            "budgets_ms": {},
            "split": "val",
            "val_size": job.val_size,
            "weights": weights,
            "created": time.strftime(CREATED_FORMAT),
            "measured_at": getattr(getattr(evaluator, "latency", None), "measured_since", None) or time.time(),
        }
    budgets = dict(dense.get("budgets_ms") or {})
    for label in job.budgets:
        if label not in budgets:  # a budget the LUT says no policy can meet is refused here, with the lowest that can be
            check = getattr(evaluator, "check_budget", None) or evaluator.budget_ms
            budgets[label] = float(check(label))
    dense["budgets_ms"] = budgets
    write_json(out_dir / DENSE_FILE, dense)
    return dense


def dense_measured_at(dense: dict[str, Any]) -> float | None:
    """When the job's dense reference was measured (`time.time()`): live times of its policies are
    only comparable with the budgets when taken since. Runs from before `measured_at` was recorded
    give their creation time."""
    if dense.get("measured_at") is not None:
        return float(dense["measured_at"])
    try:
        return time.mktime(time.strptime(str(dense["created"]), CREATED_FORMAT))
    except (KeyError, ValueError):
        return None


def _fp_id(fp: Any) -> str | None:
    if isinstance(fp, dict) and fp.get("fingerprint_id"):
        return str(fp["fingerprint_id"])
    if not fp:
        return None
    try:
        from hwprofiler import fingerprint_id

        return fingerprint_id(fp)
    except Exception:
        return None


def _maybe_int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def make_context(job: Job, evaluator: Any, dense: dict[str, Any], worker_index: int = 0) -> SearchContext:
    labels = list(job.budgets)
    ctx = SearchContext(
        evaluator,
        [dense["budgets_ms"][b] for b in labels],
        storage=job.storage_url,
        job_name=job.name,
        out_dir=job.out,
        seed=job.seed + worker_index,
        budget_labels=labels,
        reward=job.reward,
        max_ratio=job.max_ratio,
        latency_source=job.latency_source,
        agent_options=job.agent_options,
    )
    add_budget = getattr(evaluator, "add_budget", None)
    if add_budget is not None:  # the hybrid latency rule measures live what may win a budget
        for ms in ctx.budgets_ms:
            add_budget(f"{ms!r}ms")
    ctx.worker_index = worker_index  # type: ignore[attr-defined]
    ctx.dense = dense  # type: ignore[attr-defined]
    ctx.job = job  # type: ignore[attr-defined]
    return ctx


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


def run_search(job: Job, *, progress: bool = True, console: Any = None) -> RunOutcome:
    """Run (or continue) `job`; returns its summary (see search.report)."""
    import torch

    torch.set_num_threads(1)
    out = Path(job.out)
    with job_lock(out):
        prepare_job_dir(job)
        check_agents(job)
        store.repair_journal(job.storage_url)
        with _status(console, progress, f"loading {job.model}, measuring the dense model on {job.device}"):
            evaluator = build_evaluator(job)
            dense = dense_reference(job, evaluator)
        ctx = make_context(job, evaluator, dense)
        outcome = RunOutcome(job, {})
        todo = []
        for name in job.agents:
            study = ctx.study(name)
            store.fail_stale_running(study)  # left by a killed run; no other process holds this job
            todo.append((name, max(0, job.evals - ctx.finished(name))))
        with _progress(ctx, job, progress, console) as bar, _interrupt_note(console, job):
            for name, remaining in todo:
                if remaining <= 0:
                    continue
                before = ctx.finished(name)
                try:
                    agent = make_agent(name, **job.agent_options.get(name, {}))
                    if job.workers > 1 and getattr(agent, "supports_workers", False):
                        _run_parallel(job, ctx, agent, remaining, bar)
                    else:
                        if job.workers > 1:
                            log.info("agent %s runs in one process (--workers applies to Optuna agents)", name)
                        agent.run(ctx, remaining)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # one broken agent must not cost the others their turn
                    log.debug("agent %s failed", name, exc_info=True)
                    outcome.failed[name] = f"{type(exc).__name__}: {exc}"
                    _say(console, f"[red]agent {name} failed:[/] {type(exc).__name__}: {exc}")
                after = ctx.finished(name)
                if bar is not None and name not in outcome.failed:
                    bar.refresh_agent(name, final=True)
                outcome.ran[name] = after - before
                if after < job.evals and name not in outcome.failed:
                    outcome.short[name] = job.evals - after
        flush = getattr(evaluator, "flush", None)
        if flush is not None:
            flush()  # LUT entries measured during the search
        from .report import write_report

        outcome.summary = write_report(out, storage=ctx.storage, job=job, dense=dense)
    return outcome


@contextmanager
def _status(console: Any, enabled: bool, text: str) -> Iterator[None]:
    if not enabled:
        yield
        return
    if console is None:
        from hilprune.cli.output import console
    with console.status(text):
        yield


@contextmanager
def _interrupt_note(console: Any, job: Job) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        _say(
            console,
            f"[yellow]interrupted[/]: finished evaluations are saved in {job.storage_url}; rerun the same command to continue",
        )
        raise


def _say(console: Any, text: str) -> None:
    if console is None:
        from hilprune.cli.output import console as c

        console = c
    console.print(text)


@contextmanager
def _progress(ctx: SearchContext, job: Job, enabled: bool, console: Any) -> Iterator[Any]:
    """A rich progress bar per agent (trials finished / evals), fed by the context's listener."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if console is None:
        from hilprune.cli.output import console
    prog = Progress(
        TextColumn("[bold]{task.fields[agent]:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best@{task.fields[budget]} {task.fields[best]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    b0 = ctx.budgets_ms[0] if ctx.budgets_ms else float("inf")
    tasks = {}
    best: dict[str, float] = {}
    for name in job.agents:
        done = ctx.finished(name)
        recs = [r for r in ctx.records(name) if r.latency_ms <= b0]
        if recs:
            best[name] = max(r.accuracy for r in recs)
        tasks[name] = prog.add_task(
            name,
            total=job.evals,
            completed=min(done, job.evals),
            agent=name,
            budget=ctx.budget_labels[0] if ctx.budget_labels else "-",
            best=f"{best[name]:.4f}" if name in best else "-",
        )

    def on_record(agent: str, result: Any, number: int) -> None:
        if agent not in tasks:
            return
        if float(result.latency_ms) <= b0 and float(result.accuracy) > best.get(agent, -1.0):
            best[agent] = float(result.accuracy)
        prog.update(tasks[agent], advance=1, best=f"{best[agent]:.4f}" if agent in best else "-")

    ctx.listeners.append(on_record)

    def refresh(agent: str, final: bool = False) -> None:  # workers write trials this process never sees: poll the storage
        done = min(job.evals, ctx.finished(agent))
        if final and done < job.evals:  # an agent that stopped early (uniform): a full bar of what it did
            prog.update(tasks[agent], total=max(1, done), completed=done)
        else:
            prog.update(tasks[agent], completed=done)

    prog.refresh_agent = refresh  # type: ignore[attr-defined]
    with prog:
        try:
            yield prog
        finally:
            ctx.listeners.remove(on_record)


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


def _run_parallel(job: Job, ctx: SearchContext, agent: Any, remaining: int, bar: Any) -> None:
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
            if bar is not None and hasattr(bar, "refresh_agent"):
                try:
                    bar.refresh_agent(agent.name)
                except Exception:
                    pass

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
    ctx = make_context(job, evaluator, dense, worker_index=index)
    agent = make_agent(agent_name, **job.agent_options.get(agent_name, {}))
    try:
        agent.run(ctx, n_evals)
    finally:
        flush = getattr(evaluator, "flush", None)
        if flush is not None:
            flush()
