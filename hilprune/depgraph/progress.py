"""Progress on stderr for analyses that take more than a second (a tqdm bar that appears only then)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

DELAY_S = 1.0


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool | None = None) -> Iterator[Any]:
    """A bar on stderr shown after DELAY_S; `enabled` None shows it only when stderr is a terminal."""
    bar = tqdm(total=total, desc=desc, unit="layer", file=sys.stderr, delay=DELAY_S, leave=False, disable=_disabled(enabled))
    try:
        yield bar
    finally:
        bar.close()


def _disabled(enabled: bool | None) -> bool | None:
    if enabled is None:
        return None  # tqdm: off when the stream is not a terminal
    return not enabled
