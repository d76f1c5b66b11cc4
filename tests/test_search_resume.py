"""Resume: a search killed with SIGKILL mid-run keeps every finished trial, and rerunning the same
command continues it to the total."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("envs.evaluator", reason="envs.evaluator (PolicyEvaluator) is not available")

from search import store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOTAL = 30  # evaluations take 40-400 ms each (by CPU): enough that the kill lands mid-run
KILL_AFTER = 3


def finished(journal: Path, name: str) -> list[tuple[int, tuple[float, ...], dict]]:
    if not journal.is_file():
        return []
    storage = store.open_storage(str(journal), cache=False)
    try:
        study = store.get_study(storage, name, create=False)
    except Exception:
        return []
    return [(t.number, tuple(t.values), dict(t.params)) for t in study.get_trials(states=(store.TrialState.COMPLETE,))]


def test_sigkill_then_rerun_keeps_finished_trials_and_reaches_the_total(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "hilprune",
        "search",
        "-m",
        "digits-cnn",
        "-d",
        "digits",
        "--device",
        "sim-cpu",
        "--budget",
        "0.5",
        "--agent",
        "random",
        "--evals",
        str(TOTAL),
        "--out",
        str(out),
        "--name",
        "resume",
        "--proxy",
        "bn",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    journal, name = out / "study.journal", "resume/random"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while len(finished(journal, name)) < KILL_AFTER:
            if proc.poll() is not None:
                pytest.fail(f"search ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            assert time.time() < deadline, "no trials were written"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = finished(journal, name)
    assert KILL_AFTER <= len(before) < TOTAL, "kill landed too late to test resume"
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = finished(journal, name)
    assert len(after) == TOTAL
    assert after[: len(before)] == before  # nothing lost, nothing changed
    # the random sequence continues where it stopped (evaluation i draws from rng([seed, i]))
    study = store.get_study(store.open_storage(str(journal), cache=False), name, create=False)
    assert sorted(t.user_attrs["random_index"] for t in study.get_trials(states=(store.TrialState.COMPLETE,))) == list(
        range(TOTAL)
    )
    # the same command again has nothing left to do
    again = subprocess.run(cmd + ["--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(finished(journal, name)) == TOTAL
