"""Finding torch-pruning's groups with a time budget per group and for the whole model, and progress on stderr.

torch-pruning's group search re-walks a node whenever its channel indices arrive in another order, and
compares every step against the whole group found so far (a list scan). On models whose channels are
split and re-joined many times that is quadratic at best and can explode. While a search runs, the
group class it builds is swapped for one that looks steps up in a set and stops at a deadline; a search
past its budget gives up on that layer only ("analysis timed out"), never on the model.
"""

from __future__ import annotations

import importlib
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch_pruning as tp
from torch import nn

from .progress import Progress, progress_of

GROUP_SEARCH_S = 10.0  # one layer's group search
TOTAL_SEARCH_S = 40.0  # all group searches of one model

_TP_GRAPH: Any = importlib.import_module("torch_pruning.dependency.graph")
_LOCK = threading.Lock()


class SearchTimeout(Exception):
    """A group search ran past its deadline."""


class _BoundedGroup(tp.dependency.Group):  # type: ignore[name-defined,misc]
    """torch-pruning's Group with a set index of its steps and a deadline (used only while a search runs)."""

    deadline = float("inf")

    def __init__(self) -> None:
        super().__init__()
        self._steps: set[tuple[Any, Any, tuple]] = set()

    def _check(self) -> None:
        if time.monotonic() > _BoundedGroup.deadline:
            raise SearchTimeout

    def add_dep(self, dep: Any, idxs: Any) -> None:
        self._check()
        super().add_dep(dep, idxs)
        self._steps.add((dep.target, dep.handler, tuple(idxs)))

    def has_pruning_op(self, dep: Any, idxs: Any) -> bool:
        self._check()
        return (dep.target, dep.handler, tuple(idxs)) in self._steps


@contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Group searches inside this block raise SearchTimeout after `seconds`."""
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning's "Maximum recursive depth reached!" from its shape inference
        original = _TP_GRAPH.Group
        _BoundedGroup.deadline = time.monotonic() + seconds
        _TP_GRAPH.Group = _BoundedGroup
        try:
            yield
        finally:
            _TP_GRAPH.Group = original
            _BoundedGroup.deadline = float("inf")


@dataclass
class SearchResult:
    groups: list[tuple[Any, Any]] = field(default_factory=list)  # (root layer, its full torch-pruning group)
    failed: list[tuple[Any, str]] = field(default_factory=list)  # (root layer, why it has no group)
    seconds: float = 0.0


def search_groups(
    graph: Any,
    ignored: list[nn.Module],
    root_types: tuple[type, ...] = (nn.Conv2d, nn.Linear),
    group_s: float = GROUP_SEARCH_S,
    total_s: float = TOTAL_SEARCH_S,
    progress: Progress | bool | None = None,
) -> SearchResult:
    """Every prunable group of `graph`, as torch-pruning's get_all_groups finds them, within time budgets.

    A group that contains an ignored layer's output channels (the model's output) is reported in `failed`,
    and so is a layer whose search timed out, unless a later group covers it.
    """
    result = SearchResult()
    start = time.monotonic()
    roots = [m for m in graph.module2node if isinstance(m, root_types) and m not in ignored]
    visited: set[Any] = set()
    covered: set[Any] = set()  # output channels that some found group prunes
    with progress_of(progress) as bar:
        bar.stage("group search", len(roots))
        for m in roots:
            bar.advance()
            if m in visited:
                continue
            pruner = graph.get_pruner_of_module(m)
            channels = None if pruner is None else pruner.get_out_channels(m)
            if channels is None:
                continue
            left = total_s - (time.monotonic() - start)
            if left <= 0:
                result.failed.append((m, f"analysis timed out (the model's {total_s:.0f} s budget for group search was spent)"))
                continue
            try:
                with bounded(min(group_s, left)):
                    group = graph.get_pruning_group(m, pruner.prune_out_channels, list(range(channels)))
            except SearchTimeout:
                visited.add(m)
                result.failed.append((m, f"analysis timed out (its group search ran past {min(group_s, left):.0f} s)"))
                continue
            outs = [dep.target.module for dep, _idxs in group if graph.is_out_channel_pruning_fn(dep.handler)]
            visited.update(outs)
            output = next((o for o in outs if o in ignored), None)
            if output is not None:
                result.failed.append((m, f"its channels are the model's outputs (coupled to {graph._module2name.get(output)})"))
            else:
                covered.update(outs)
                result.groups.append((m, group))
    result.failed = [(m, reason) for m, reason in result.failed if m not in covered]
    result.seconds = time.monotonic() - start
    return result
