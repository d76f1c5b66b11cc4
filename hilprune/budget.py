"""Latency budgets: read once from what the user wrote, resolved once against the dense model.

A budget is written as a fraction of the dense model's latency ("0.5", "50%") or in
milliseconds ("1.2ms"). It is resolved once, when a job's dense reference is measured, into a
`Budget` that carries its milliseconds; everything downstream takes that value (or plain
milliseconds) and judges it with `within_budget`, the one rule with the one tolerance.

Live latencies a search compares with a fractional budget are measured interleaved with the
dense model and expressed in the reference's frame (ratio x the reference's milliseconds), so a
fraction is judged on the paired ratio: the machine's speed modes cancel out of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import HilpruneError

TOLERANCE = 1e-9  # relative: a latency equal to the budget up to float rounding meets it
_MS = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)ms$")


class BudgetError(HilpruneError):
    """A latency budget that cannot be read, or cannot be met. `floor`: where the budget cannot be met,
    the lowest fraction of the dense latency that can (None when unknown), for a caller that settles
    for the lowest reachable budget instead of stopping."""

    def __init__(self, message: str, *, floor: float | None = None) -> None:
        super().__init__(message)
        self.floor = floor


def lowest_budget(floor: float) -> str:
    """The lowest fractional budget label that can be met, from the fraction of dense a model cannot go
    below (BudgetError.floor): rounded *up* to a hundredth, so that the label offered is one that works."""
    return _fmt(math.ceil(round(float(floor) * 100, 9)) / 100)


def within_budget(latency_ms: float, budget_ms: float) -> bool:
    """Whether a latency meets a budget: the one rule every part of hilprune judges by."""
    return float(latency_ms) <= float(budget_ms) * (1 + TOLERANCE)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def parse_budget(text: str | float | int) -> str:
    """The canonical label of one budget: '0.5' (a fraction of the dense latency) or '1.2ms'."""
    if isinstance(text, bool):
        raise BudgetError(f"budget {text!r}: expected a fraction of the dense latency (0.5) or milliseconds (1.2ms)")
    if isinstance(text, (int, float)):
        value, raw = float(text), repr(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        m = _MS.match(raw)
        if m:
            ms = float(m.group(1))
            if not (ms > 0 and math.isfinite(ms)):
                raise BudgetError(f"budget {text!r}: a latency budget must be a positive number of milliseconds")
            return f"{_fmt(ms)}ms"
        try:
            value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
        except ValueError:
            raise BudgetError(
                f"budget {text!r}: expected a fraction of the dense latency (0.5, 50%) or milliseconds (1.2ms)"
            ) from None
    if not (0 < value <= 1) or not math.isfinite(value):
        raise BudgetError(
            f"budget {raw}: a fractional budget must be in (0, 1] (a fraction of the dense model's latency); "
            "write milliseconds as e.g. 1.2ms"
        )
    return _fmt(value)


def parse_budgets(values: Any) -> list[str]:
    """Budgets from a list and/or comma-separated strings; duplicates removed, order kept."""
    if values is None:
        return []
    if isinstance(values, (str, int, float)):
        values = [values]
    out: list[str] = []
    for v in values:
        parts = [p for p in str(v).split(",") if p.strip()] if isinstance(v, str) else [v]
        for p in parts:
            label = parse_budget(p)
            if label not in out:
                out.append(label)
    return out


@dataclass(frozen=True)
class Budget:
    """A resolved budget: its label as written (canonical), its milliseconds, and the fraction of
    the dense reference it was given as (None for a budget in milliseconds)."""

    label: str
    ms: float
    fraction: float | None = None

    def __post_init__(self) -> None:
        if not (self.ms > 0 and math.isfinite(self.ms)):
            raise BudgetError(f"budget {self.label}: must resolve to a positive number of milliseconds, got {self.ms!r}")

    def met_by(self, latency_ms: float) -> bool:
        return within_budget(latency_ms, self.ms)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "ms": self.ms, "fraction": self.fraction}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Budget:
        return cls(str(d["label"]), float(d["ms"]), None if d.get("fraction") is None else float(d["fraction"]))


def resolve_budget(budget: str | float | int | Budget, dense_ms: float) -> Budget:
    """`budget` in milliseconds, a fraction taken of `dense_ms` (the dense reference)."""
    if isinstance(budget, Budget):
        return budget
    label = parse_budget(budget)
    if label.endswith("ms"):
        return Budget(label, float(label[:-2]))
    fraction = float(label)
    return Budget(label, fraction * float(dense_ms), fraction)


def resolve_budgets(budgets: Iterable[str | float | int | Budget], dense_ms: float) -> list[Budget]:
    return [resolve_budget(b, dense_ms) for b in budgets]


def smallest_ratio(
    lat: Callable[[float], float],
    budget_ms: float,
    low: float,
    high: float,
    tol: float = 1e-3,
    rel_tol: float = 0.0,
    max_iter: int = 60,
) -> tuple[float, float]:
    """Smallest r in [low, high] with lat(r) <= budget (lat non-increasing in r), and lat at it.

    Returns `(high, lat(high))` when even `high` is over the budget. With `rel_tol`, stops early
    once a feasible r has lat(r) >= budget * (1 - rel_tol).
    """
    f_low = lat(low)
    if f_low <= budget_ms:
        return low, f_low
    f_high = lat(high)
    if f_high > budget_ms:
        return high, f_high
    lo, hi, f_hi = low, high, f_high
    for _ in range(max_iter):
        if hi - lo <= tol or (rel_tol and f_hi >= budget_ms * (1 - rel_tol)):
            break
        mid = 0.5 * (lo + hi)
        f_mid = lat(mid)
        if f_mid <= budget_ms:
            hi, f_hi = mid, f_mid
        else:
            lo = mid
    return hi, f_hi


__all__ = [
    "TOLERANCE",
    "Budget",
    "BudgetError",
    "parse_budget",
    "parse_budgets",
    "resolve_budget",
    "resolve_budgets",
    "smallest_ratio",
    "within_budget",
]
