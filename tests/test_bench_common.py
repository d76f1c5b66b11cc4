"""The docs' load line: a run's own worker processes are not "other processes"."""

from __future__ import annotations

from bench.common import load_line


def test_one_process_run_is_flagged_when_anything_else_loaded_the_cpu() -> None:
    assert "other processes shared" not in load_line({"start": 0.4, "end": 1.2}, 2)
    assert "other processes shared" in load_line({"start": 0.4, "end": 1.7}, 2)


def test_a_run_with_two_workers_is_flagged_only_above_its_own_load() -> None:
    quiet = load_line({"start": 0.5, "end": 2.2}, 2, own_processes=2)
    assert "other processes shared" not in quiet and "own 2 worker processes" in quiet
    assert "other processes shared" in load_line({"start": 0.5, "end": 2.8}, 2, own_processes=2)
