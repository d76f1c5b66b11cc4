"""How a requested prune ratio becomes a channel count (with optional `round_to` alignment)."""

from __future__ import annotations

import math


def channels_after(channels: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept when `ratio` of `channels` is pruned.

    At least one channel survives. With `round_to` > 1 the kept count is rounded down to a
    multiple of it (never below `round_to`), as torch-pruning does, unless nothing is pruned.
    """
    keep = max(1, channels - int(math.floor(channels * ratio + 1e-9)))
    if round_to > 1 and keep < channels:
        keep = max(min(round_to, channels), (keep // round_to) * round_to)
    return keep


def achieved_ratio(channels: int, kept: int) -> float:
    return 1.0 - kept / channels
