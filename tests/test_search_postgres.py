"""Many machines, one study: two worker processes of one Optuna agent share a study on a real
PostgreSQL server; one is killed with SIGKILL mid-search; rerunning the job loses and duplicates
no finished trial.

`.ci/run` installs and starts the server (.ci/postgres.sh) and sets $HILPRUNE_TEST_POSTGRES; the
test skips, saying why, only where PostgreSQL could not be installed or no server is given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'hilprune[postgres]'")

from search import store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOTAL = 40  # evaluations in all: enough that the kill lands while both workers run
KILL_AFTER = 4


def postgres_url() -> str:
    url = os.environ.get("HILPRUNE_TEST_POSTGRES")
    if not url:
        pytest.skip(
            os.environ.get("HILPRUNE_TEST_POSTGRES_SKIP")
            or "no PostgreSQL server: run `bash .ci/run`, or set HILPRUNE_TEST_POSTGRES=postgresql://..."
        )
    return url


def worker_pids(out: Path) -> list[int]:
    """PIDs of `python -m search.worker <out> ...` processes (the runner's second worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"search.worker" in cmd and str(out).encode() in cmd:
            pids.append(int(entry.name))
    return pids


def complete_trials(url: str, study: str) -> list[tuple[int, tuple[float, ...], tuple]]:
    storage = store.open_storage(url, cache=False)
    try:
        s = store.get_study(storage, study, create=False)
    except Exception:
        return []
    trials = s.get_trials(states=(store.TrialState.COMPLETE,))
    return [(t.number, tuple(t.values), tuple(sorted(t.params.items()))) for t in trials]


def test_two_workers_share_a_postgres_study_and_survive_a_sigkill(tmp_path: Path) -> None:
    url = postgres_url()
    out = tmp_path / "pg"
    name = f"pg-{uuid.uuid4().hex[:8]}"  # a fresh study per run: the database may outlive the test
    study = f"{name}/tpe"
    cmd = [sys.executable, "-m", "hilprune", "search", "-m", "digits-cnn", "-d", "digits", "--device", "sim-cpu"]
    cmd += ["--budget", "0.5", "--agent", "tpe", "--evals", str(TOTAL), "--workers", "2", "--storage", url]
    cmd += ["--out", str(out), "--name", name, "--proxy", "bn", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = None
    try:
        deadline = time.time() + 240
        while True:
            assert time.time() < deadline, "the two workers wrote no trials in time"
            if proc.poll() is not None:
                pytest.fail(f"the search ended before a worker could be killed: {proc.stderr.read().decode()[-2000:]}")
            pids = worker_pids(out)
            if pids and len(complete_trials(url, study)) >= KILL_AFTER:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
                break
            time.sleep(0.2)
        proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None
    before = complete_trials(url, study)
    assert KILL_AFTER <= len(before) < TOTAL, "the kill landed too late to test anything"
    assert proc.returncode != 0  # the killed worker is reported: rerun to resume
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = complete_trials(url, study)
    assert len(after) == TOTAL  # the job's total, exactly: nothing lost, nothing counted twice
    assert len({n for n, _v, _p in after}) == TOTAL
    assert set(before) <= set(after)  # every trial finished before the kill is kept unchanged
    storage = store.open_storage(url, cache=False)
    states = [t.state for t in store.get_study(storage, study, create=False).get_trials()]
    assert store.TrialState.RUNNING not in states  # the killed worker's trial in flight was closed (FAIL)
