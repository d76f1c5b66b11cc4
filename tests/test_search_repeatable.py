"""A seeded search on the simulated device repeats exactly, in fresh processes: the same trials,
policies, accuracies and latencies, whatever machine runs it and however loaded it is.

Each run starts from an empty device cache: a search's predictor learns from the live
measurements in the device's LUT file, so a run after another starts from what that one learned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("envs.evaluator", reason="envs.evaluator (PolicyEvaluator) is not available")

from search import store  # noqa: E402
from search.job import load_run_job  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AGENTS = ("uniform", "random", "tpe", "ppo")


EVALS = 4


def start(out: Path) -> subprocess.Popen:
    """`hilprune search` in its own process (both searches run at once: sim-cpu times nothing)."""
    cmd = [sys.executable, "-m", "hilprune", "search", "-m", "digits-cnn", "-d", "digits", "--device", "sim-cpu"]
    cmd += ["--budget", "0.5,0.7", "--agent", ",".join(AGENTS), "--evals", str(EVALS), "--seed", "3", "--out", str(out)]
    cmd += ["--latency-source", "hybrid", "--proxy", "bn", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HWPROFILER_CACHE=str(out.parent / f"{out.name}-hwcache"))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(out: Path, run: subprocess.Popen) -> dict[str, list[tuple]]:
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    job = load_run_job(out)
    recs = store.load_records(store.open_storage(job.storage_url, cache=False), job.name)
    return {
        agent: [
            (r.number, r.accuracy, r.latency_ms, r.lut_latency_ms, r.live_ratio, tuple(sorted(r.ratios().items()))) for r in rs
        ]
        for agent, rs in recs.items()
    }


@pytest.mark.slow
def test_a_seeded_search_repeats_exactly(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    runs = start(a), start(b)
    first, second = records(a, runs[0]), records(b, runs[1])
    assert set(first) == set(AGENTS) and all(len(first[a]) == EVALS for a in AGENTS)
    assert first == second
    assert any(r[4] is not None for recs in first.values() for r in recs)  # hybrid: some live (paired) measurements
