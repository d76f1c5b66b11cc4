"""The export's pick (search.pick): the budget by live latency, then the tie break among trials the
proxy cannot tell apart. Live latencies are scripted per trial, so nothing here depends on timing."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hilprune.errors import HilpruneError
from search.pick import TIE_STANDARD_ERRORS, pick_trial, standard_error
from search.store import TrialRecord

BUDGET_MS = 1.0


def rec(number: int, accuracy: float, macs: int, live_ms: float, measured: bool = True) -> TrialRecord:
    """A trial whose scripted live latency is `live_ms` (its policy names it, so `live` can look it up)."""
    return TrialRecord(
        agent="ppo",
        number=number,
        accuracy=accuracy,
        latency_ms=min(live_ms, BUDGET_MS),  # every trial is a candidate by its recorded latency
        live_ratio=live_ms if measured else None,
        macs=macs,
        policy={"live_ms": live_ms},
    )


class ScriptedLive:
    """`LiveLatency`'s call signature; returns each trial's scripted latency and counts the calls."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, policy: Any, recorded_ms: float | None = None) -> float:
        self.calls.append(policy["live_ms"])
        return float(policy["live_ms"])


def pick(records: list[TrialRecord], **kw: Any) -> Any:
    live = ScriptedLive()
    picked = pick_trial({"ppo": records}, BUDGET_MS, live, lambda r: r.policy, **kw)
    return picked, live


def test_standard_error_is_the_binomial_one() -> None:
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(0.93, 1000) == pytest.approx(math.sqrt(0.93 * 0.07 / 1000))
    assert standard_error(1.0, 10) == 0.0
    with pytest.raises(ValueError):
        standard_error(0.5, 0)


def test_a_tied_trial_that_keeps_more_macs_is_exported() -> None:
    best = rec(1, 0.932, 25_000_000, 0.90)
    tied_larger = rec(2, 0.926, 30_000_000, 0.95)  # 0.6 point below: within one SE on 1000 images (0.8)
    tied_smaller = rec(3, 0.930, 20_000_000, 0.80)
    picked, _ = pick([best, tied_larger, tied_smaller], val_images=1000)
    assert picked.record is tied_larger and picked.live_ms == 0.95
    assert picked.best is best and picked.ties == 3
    assert picked.tie_margin == pytest.approx(TIE_STANDARD_ERRORS * standard_error(0.932, 1000))
    assert picked.to_dict()["most_accurate"] == "ppo:1"


def test_a_trial_outside_the_margin_is_not_a_tie() -> None:
    best = rec(1, 0.932, 25_000_000, 0.90)
    worse_larger = rec(2, 0.920, 31_000_000, 0.95)  # 1.2 points below: more than one SE (0.8) on 1000 images
    picked, _ = pick([best, worse_larger], val_images=1000)
    assert picked.record is best
    # on 100 images one SE is 2.5 points: the same two trials are tied there
    picked, _ = pick([best, worse_larger], val_images=100)
    assert picked.record is worse_larger


def test_a_larger_tie_over_the_budget_live_is_passed_over_for_the_next_one() -> None:
    best = rec(1, 0.932, 25_000_000, 0.90)
    largest_but_slow = rec(2, 0.930, 31_000_000, 1.05, measured=False)  # measured at export: over the budget
    next_largest = rec(3, 0.929, 28_000_000, 0.97, measured=False)
    picked, live = pick([best, largest_but_slow, next_largest], val_images=1000)
    assert picked.record is next_largest and picked.live_ms == 0.97
    assert live.calls == [0.90, 1.05, 0.97]  # the best first, then the ties by MACs


def test_the_best_must_meet_the_budget_live_before_ties_are_looked_at() -> None:
    over = rec(1, 0.940, 30_000_000, 1.10)  # the most accurate by the proxy, over the budget live
    best = rec(2, 0.932, 25_000_000, 0.90)
    tied = rec(3, 0.925, 27_000_000, 0.92)  # within one SE of 0.932 (not of 0.940's margin alone)
    picked, _ = pick([over, best, tied], val_images=1000)
    assert picked.best is best and picked.record is tied


def test_tie_break_accuracy_and_no_image_count_keep_the_most_accurate() -> None:
    best = rec(1, 0.932, 25_000_000, 0.90)
    tied_larger = rec(2, 0.930, 30_000_000, 0.95)
    assert pick([best, tied_larger], val_images=1000, tie_break="accuracy")[0].record is best
    assert pick([best, tied_larger], val_images=None)[0].record is best


def test_bad_tie_break_and_no_trial_within_the_budget_are_clear_errors() -> None:
    with pytest.raises(HilpruneError, match="--tie-break must be one of macs, accuracy"):
        pick([rec(1, 0.9, 1, 0.5)], val_images=1000, tie_break="params")
    with pytest.raises(HilpruneError, match="no trial meets the budget"):
        pick([rec(1, 0.9, 1, 1.2), rec(2, 0.8, 1, 1.3)], val_images=1000)
