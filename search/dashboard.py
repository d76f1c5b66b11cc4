"""optuna-dashboard on a search job's storage, with its artifacts (search.artifacts attaches them).

Equivalent by hand: `optuna-dashboard runs/<name>/study.journal --artifact-dir runs/<name>/artifacts`.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from hilprune.errors import HilpruneError
from hwprofiler.cli import is_loopback

from . import store
from .job import Job, load_run_job

log = logging.getLogger(__name__)


def check_port(host: str, port: int) -> None:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise HilpruneError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port") from None


def prepare(run_dir: str | Path) -> tuple[Any, Any, Job]:
    """(storage, artifact store, job) for a run directory, with the artifacts refreshed."""
    run_dir = Path(run_dir)
    job = load_run_job(run_dir)
    storage = store.open_storage(job.storage_url)
    if not store.study_names(storage, job.name):
        raise HilpruneError(f"{run_dir}: no studies in {job.storage_url} yet; run 'hilprune search' first")
    if (run_dir / "dense.json").is_file():
        try:
            from .report import write_report

            write_report(run_dir, storage=storage, job=job)
        except Exception as exc:
            log.warning("could not refresh the report: %s", exc)
    return storage, store.artifact_store(run_dir), job


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, quiet: bool = False) -> None:
    """Serve optuna-dashboard for a run (blocks until Ctrl-C)."""
    from optuna_dashboard import run_server

    if not is_loopback(host):
        log.warning("serving on %s: the dashboard has no authentication and lets anyone who reaches it edit notes", host)
    check_port(host, port)
    storage, astore, job = prepare(run_dir)
    if not quiet:
        from .progress import stderr_console

        stderr_console().print(
            f"optuna-dashboard for [bold]{job.name}[/] ({job.storage_url}) at http://{host}:{port}/  (Ctrl-C to stop)"
        )
    try:
        run_server(storage, host=host, port=port, artifact_store=astore)
    except OSError as exc:
        raise HilpruneError(f"cannot serve on {host}:{port}: {exc}") from None
