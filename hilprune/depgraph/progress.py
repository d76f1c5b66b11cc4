"""Progress on stderr for analyses that take more than a second: one tqdm bar for all stages of an
analysis (group search, trial prunes, ranking), shown only once the analysis has taken DELAY_S."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

DELAY_S = 1.0


class Progress:
    """A bar whose stages add steps as they start; `enabled` None shows it only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None, desc: str = "analysis") -> None:
        disable = None if enabled is None else not enabled  # tqdm: None = off when the stream is not a terminal
        self.bar: Any = tqdm(total=0, desc=desc, unit="step", file=sys.stderr, delay=DELAY_S, leave=False, disable=disable)

    def stage(self, desc: str, steps: int) -> None:
        self.bar.set_description_str(desc, refresh=False)
        self.bar.total += steps

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


@contextmanager
def progress_of(progress: Progress | bool | None) -> Iterator[Progress]:
    """`progress` itself when it is a Progress (its owner closes it), else a new one closed on exit."""
    if isinstance(progress, Progress):
        yield progress
        return
    own = Progress(progress)
    try:
        yield own
    finally:
        own.close()
