"""Channel-importance criteria, swappable by name; all are torch-pruning's own objects."""

from __future__ import annotations

from collections.abc import Callable

import torch_pruning as tp

from ..errors import HilpruneError

IMPORTANCE: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "fpgm": lambda: tp.importance.FPGMImportance(p=2),
    "bn-scale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
}
NEEDS_GRADIENTS = {"taylor"}


def make_importance(name: str) -> tp.importance.Importance:
    if name not in IMPORTANCE:
        raise HilpruneError(f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCE)}")
    return IMPORTANCE[name]()
