"""Choosing the INT8 scheme: the fastest measured scheme whose validation accuracy holds.

Pure logic: how a scheme's latency and accuracy are obtained is passed in (the pipeline measures on
the device and runs onnxruntime; tests pass deterministic functions). Every scheme is timed paired
with fp32, and its INT8 time must beat the fp32 graph's fastest time in any scheme's pair by
`min_speedup`. The schemes within `runoff` of the fastest are then
timed head to head (`compare(a, b)`: a's time over b's, paired), in candidate order: a later one
must beat the current leader by more than `tie` to take its place, so timing noise does not flip
the choice between schemes that run the same kernels (QDQ and QOperator U8S8). Accuracy is checked
leader first, then in order of speed, stopping at the first that holds, since checking a slower
scheme could not change the choice. When no scheme is fast enough, or none keeps its accuracy, the
model stays fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hwprofiler.quantization import Scheme

from .defaults import MIN_SPEEDUP as DEFAULT_MIN_SPEEDUP
from .defaults import RUNOFF as DEFAULT_RUNOFF
from .defaults import TIE as DEFAULT_TIE
from .defaults import TOLERANCE as DEFAULT_TOLERANCE


@dataclass(frozen=True)
class Timing:
    """A scheme's graph timed paired with the fp32 graph: ratio = int8 / fp32 (`select_scheme`
    takes the fp32 time as the fastest over every scheme's pair, `on_fastest_fp32`)."""

    int8_ms: float
    fp32_ms: float
    ratio: float


@dataclass
class Trial:
    scheme: Scheme
    timing: Timing | None = None
    val_accuracy: float | None = None
    versus: tuple[str, float] | None = None  # head to head: (the leader it was timed against, its time / the leader's)
    verdict: str = "not checked"  # chosen | slower than fp32 | accuracy dropped | slower than the chosen scheme | failed
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        t = self.timing
        return self.scheme.to_dict() | {
            "int8_ms": t.int8_ms if t else None,
            "fp32_ms": t.fp32_ms if t else None,
            "ratio": t.ratio if t else None,
            "speedup": 1.0 / t.ratio if t and t.ratio > 0 else None,
            "val_accuracy": self.val_accuracy,
            "head_to_head": {"vs": self.versus[0], "ratio": self.versus[1]} if self.versus else None,
            "verdict": self.verdict,
            "error": self.error,
        }


@dataclass
class Selection:
    chosen: Trial | None
    trials: list[Trial]
    fp32_val_accuracy: float
    tolerance: float
    min_speedup: float
    reason: str

    @property
    def precision(self) -> str:
        return "int8" if self.chosen is not None else "fp32"


def select_scheme(
    schemes: Sequence[Scheme],
    time_scheme: Callable[[Scheme], Timing],
    val_accuracy: Callable[[Scheme], float],
    fp32_val_accuracy: float,
    tolerance: float = DEFAULT_TOLERANCE,
    min_speedup: float = DEFAULT_MIN_SPEEDUP,
    tie: float = DEFAULT_TIE,
    compare: Callable[[Scheme, Scheme], float] | None = None,
    runoff: float = DEFAULT_RUNOFF,
) -> Selection:
    """The fastest scheme at least `min_speedup` x faster than fp32 whose validation accuracy is
    within `tolerance` (a fraction: 0.005 = 0.5 points) of fp32's (see the module docstring).
    Without `compare`, schemes whose fp32 ratios are within `tie` count as equally fast.

    A scheme whose quantization or timing fails (`Exception` from `time_scheme` or `compare`) is
    recorded as failed and skipped."""
    trials = [Trial(s) for s in schemes]
    for t in trials:
        try:
            t.timing = time_scheme(t.scheme)
        except Exception as e:  # noqa: BLE001 - one scheme failing must not stop the others
            t.verdict, t.error = "failed", _first_line(e)
    on_fastest_fp32(trials)
    eligible = []
    for t in trials:
        if t.timing is None:
            continue
        if t.timing.ratio * min_speedup > 1.0:
            t.verdict = "slower than fp32" if t.timing.ratio >= 1.0 else f"less than {min_speedup:g}x faster"
        else:
            eligible.append(t)
    order = _head_to_head(eligible, compare, tie, runoff) if compare else _speed_order(eligible, tie)
    floor = fp32_val_accuracy - tolerance
    chosen = None
    for t in order:
        if t.verdict == "failed":
            continue
        if chosen is not None:  # its accuracy cannot change the choice
            t.verdict = _not_chosen(t, chosen, tie)
            continue
        t.val_accuracy = val_accuracy(t.scheme)
        if t.val_accuracy + 1e-12 >= floor:
            t.verdict, chosen = "chosen", t
        else:
            t.verdict = "accuracy dropped"
    return Selection(chosen, trials, fp32_val_accuracy, tolerance, min_speedup, _reason(chosen, trials, floor, min_speedup))


def on_fastest_fp32(trials: Sequence[Trial]) -> None:
    """Each scheme's ratio taken against the fp32 graph's fastest time over every scheme's pair.

    The fp32 side of the pairs is the same graph each time, yet its speed moved by 40% between
    pairs on a vCPU (OpenVINO on an Ice Lake Xeon: 0.63 and 0.89 ms), and that alone once chose
    between two schemes whose INT8 graphs ran at 0.265 and 0.270 ms. Noise only adds time, so the
    fastest fp32 time is the fp32 graph's own."""
    timed = [(t, t.timing) for t in trials if t.timing is not None and t.timing.fp32_ms > 0]
    if not timed:
        return
    fp32 = min(timing.fp32_ms for _, timing in timed)
    for t, timing in timed:
        t.timing = Timing(timing.int8_ms, timing.fp32_ms, timing.int8_ms / fp32)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _ratio(t: Trial) -> float:
    return t.timing.ratio if t.timing is not None else float("inf")


def _speed_order(timed: list[Trial], tie: float) -> list[Trial]:
    """Fastest first; a run of schemes each within `tie` of the fastest of the run keeps the given order."""
    rest = sorted(timed, key=_ratio)
    order: list[Trial] = []
    while rest:
        fastest = _ratio(rest[0])
        near = [t for t in rest if _ratio(t) <= fastest * (1 + tie)]
        near.sort(key=timed.index)
        order += near
        rest = [t for t in rest if t not in near]
    return order


def _head_to_head(eligible: list[Trial], compare: Callable[[Scheme, Scheme], float], tie: float, runoff: float) -> list[Trial]:
    """The contenders (within `runoff` of the fastest fp32 ratio) timed against the leader in
    candidate order; the leader first, then the rest by their fp32 ratio."""
    if not eligible:
        return []
    best = min(_ratio(t) for t in eligible)
    contenders = [t for t in eligible if _ratio(t) <= best * (1 + runoff)]
    leader = contenders[0]
    for t in contenders[1:]:
        try:
            r = compare(t.scheme, leader.scheme)
        except Exception as e:  # noqa: BLE001
            t.verdict, t.error = "failed", _first_line(e)
            continue
        t.versus = (leader.scheme.name, r)
        if r < 1.0 - tie:
            leader = t
    return [leader] + sorted((t for t in eligible if t is not leader), key=_ratio)


def _not_chosen(t: Trial, chosen: Trial, tie: float) -> str:
    if chosen.versus is not None and chosen.versus[0] == t.scheme.name:  # a later candidate beat it head to head
        return f"{chosen.scheme.name} beat it head to head (in {chosen.versus[1]:.3f}x its time)"
    if t.versus is not None and t.versus[0] == chosen.scheme.name:
        vs, r = t.versus
        if r < 1.0 + tie:
            return f"as fast as {vs} head to head ({r:.3f}x its time): the earlier candidate is kept"
        return f"slower than {vs} head to head ({r:.3f}x its time)"
    if t.timing is not None and chosen.timing is not None and t.timing.ratio <= chosen.timing.ratio * (1 + tie):
        return f"as fast (within {tie:.0%}): the earlier candidate is kept"
    return "slower than the chosen scheme"


def _reason(chosen: Trial | None, trials: list[Trial], floor: float, min_speedup: float) -> str:
    if chosen is not None:
        assert chosen.timing is not None and chosen.val_accuracy is not None
        lost = [t for t in trials if t.verdict == "accuracy dropped"]
        why = f"{chosen.scheme.name}: {1 / chosen.timing.ratio:.2f}x faster than fp32 on the device"
        why += f", validation accuracy {100 * chosen.val_accuracy:.2f}% (floor {100 * floor:.2f}%)"
        if lost:
            why += "; as fast or faster but lost accuracy: " + ", ".join(t.scheme.name for t in lost)
        return why
    if not any(t.timing is not None for t in trials):
        return "fp32 kept: no scheme could be quantized and timed"
    if not any(t.verdict == "accuracy dropped" for t in trials):
        return f"fp32 kept: no INT8 scheme ran at least {min_speedup:g}x faster than fp32 on this device"
    return f"fp32 kept: every scheme fast enough lost more validation accuracy than allowed (floor {100 * floor:.2f}%)"
