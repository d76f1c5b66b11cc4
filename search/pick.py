"""Which trial of a search is exported for a budget.

The trial must meet the budget by *live* latency on the job's device (`live`, a callable that
measures a policy paired with the dense model; search.export.LiveLatency). Among those, the proxy's
validation accuracy orders them, but the proxy scores on a few hundred to a thousand images: two
trials closer than one binomial standard error of that accuracy are ties it cannot tell apart. At
2x on resnet20 (INT8, Fashion-MNIST) the eight most accurate trials of a 60-episode search lie
within 0.4 point while keeping 74-98% of the dense MACs, and the single most accurate one is then
an arbitrary member of that tie. So the default tie break exports the tied trial that keeps the
most MACs (the least pruned); ``accuracy`` keeps the single most accurate one (the rule before).
Measured on 10 picks where the two differ (docs/benchmarks.md, "export_ties" and
"export_ties_compare_agents_ppo_start"): ahead on all five INT8 picks (+0.24 point on average
after the same fine-tune), both ways on fp32 picks, whose ties keep nearly the same MACs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hilprune.budget import within_budget
from hilprune.errors import HilpruneError

from .store import TrialRecord

NEAR_BUDGET = 1.25  # measure live only trials whose recorded latency is within 125% of the budget
MAX_LIVE_CANDIDATES = 25  # trials measured live (not measured during the search) before giving up
TIE_BREAKS = ("macs", "accuracy")
DEFAULT_TIE_BREAK = "macs"
TIE_STANDARD_ERRORS = 1.0  # accuracies within this many standard errors of the best one are ties
MAX_TIE_CANDIDATES = 10  # tied trials measured live, most MACs first, before keeping the best one


def check_tie_break(tie_break: str) -> None:
    """One clear error for an unknown tie break (export checks it before loading anything)."""
    if tie_break not in TIE_BREAKS:
        raise HilpruneError(f"--tie-break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")


def standard_error(accuracy: float, images: int) -> float:
    """Binomial standard error of an accuracy measured on `images` images."""
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / images)


@dataclass
class Pick:
    """The exported trial, its live latency (dense frame), and how the tie break chose it."""

    record: TrialRecord
    live_ms: float
    best: TrialRecord  # the most accurate trial that meets the budget live
    tie_break: str
    tie_margin: float = 0.0  # accuracy below the best's still counted as a tie
    ties: int = 1  # trials within the margin (the best included), before live measurement

    def to_dict(self) -> dict[str, Any]:
        return {
            "tie_break": self.tie_break,
            "most_accurate": self.best.ref,
            "most_accurate_val": self.best.accuracy,
            "tie_margin": self.tie_margin,
            "ties": self.ties,
        }


def _meets(r: TrialRecord, budget_ms: float, live: Callable[..., float], policy_of: Callable[[TrialRecord], Any]) -> float | None:
    """The live latency of `r` when it meets the budget, else None. A trial measured live during
    the search keeps its reading (`live` measures it again only near the budget)."""
    recorded = r.latency_ms if r.live_ratio is not None else None
    lat = live(policy_of(r), recorded_ms=recorded)
    return lat if within_budget(lat, budget_ms) else None


def pick_trial(
    records: dict[str, list[TrialRecord]] | Iterable[TrialRecord],
    budget_ms: float,
    live: Callable[..., float],
    policy_of: Callable[[TrialRecord], Any],
    *,
    val_images: int | None = None,
    tie_break: str = DEFAULT_TIE_BREAK,
    max_measured: int = MAX_LIVE_CANDIDATES,
) -> Pick:
    """The trial to export for `budget_ms` (see the module docstring); `val_images` is how many
    images the proxy scored on (None: no tie break)."""
    check_tie_break(tie_break)
    recs = [r for v in records.values() for r in v] if isinstance(records, dict) else list(records)
    candidates = sorted(
        (r for r in recs if within_budget(r.latency_ms, budget_ms * NEAR_BUDGET)),
        key=lambda r: (-r.accuracy, r.latency_ms),
    )
    measured = 0
    best: tuple[TrialRecord, float] | None = None
    for r in candidates:
        if r.live_ratio is None:
            if measured >= max_measured:
                break
            measured += 1
        lat = _meets(r, budget_ms, live, policy_of)
        if lat is not None:
            best = (r, lat)
            break
    if best is None:
        raise HilpruneError(
            f"no trial meets the budget of {budget_ms:.4g} ms by live latency "
            f"({len(candidates)} candidate(s) checked); search longer, or pick one with --trial"
        )
    top, top_ms = best
    if tie_break == "accuracy" or not val_images:
        return Pick(top, top_ms, top, tie_break)
    margin = TIE_STANDARD_ERRORS * standard_error(top.accuracy, val_images)
    tied = [r for r in candidates if r.accuracy >= top.accuracy - margin - 1e-12]
    larger = sorted(
        (r for r in tied if r is not top and (r.macs or 0) > (top.macs or 0)),
        key=lambda r: (-(r.macs or 0), -r.accuracy, r.latency_ms),
    )
    for r in larger[:MAX_TIE_CANDIDATES]:
        lat = _meets(r, budget_ms, live, policy_of)
        if lat is not None:
            return Pick(r, lat, top, tie_break, margin, len(tied))
    return Pick(top, top_ms, top, tie_break, margin, len(tied))
