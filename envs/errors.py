"""Errors of the environments: user mistakes, so they are `HilpruneError`s (one line, exit 2 in the CLI)."""

from __future__ import annotations

from hilprune.budget import BudgetError  # a budget that cannot be read or met
from hilprune.errors import HilpruneError


class EnvConfigError(HilpruneError):
    """A bad environment or evaluator option (unknown reward, latency source, action shape...)."""


__all__ = ["BudgetError", "EnvConfigError"]
