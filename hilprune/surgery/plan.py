"""From chosen root channels to a pruned copy: each group's cached items say which channels of which layer go.

The items come from one walk of the dependency graph per group on the dense model, so resolving a
policy is dictionary work, and pruning never renumbers another group's channels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

from torch import nn

from ..depgraph import Candidate
from .grouped_conv import handler_for

Plan = dict[tuple[str, Callable], set[int]]  # (layer name, torch-pruning handler) -> its channels to remove


def layer_plan(candidates: Mapping[str, Candidate], selection: Mapping[str, Sequence[int]]) -> Plan:
    """Channels to remove per layer when group `name` loses root channels `selection[name]` (dense indexing)."""
    plan: Plan = {}
    for name, roots in selection.items():
        chosen = {int(r) for r in roots}
        if not chosen:
            continue
        for it in candidates[name].items:
            idxs = {i for i, r in zip(it.idxs, it.root_idxs) if r in chosen}
            if idxs:
                plan.setdefault((it.name, it.handler), set()).update(idxs)
    return plan


def prune_copy(dense: nn.Module, plan: Plan) -> nn.Module:
    """A copy of `dense` with the plan's channels removed (the dense model is left untouched)."""
    model = copy.deepcopy(dense)
    dense_modules = dict(dense.named_modules())
    modules = dict(model.named_modules())
    for (name, handler), idxs in plan.items():
        handler_for(dense_modules[name], handler)(modules[name], sorted(idxs))
    for name, m in modules.items():
        if isinstance(m, nn.Conv2d) and (m.in_channels % m.groups or m.out_channels % m.groups):
            raise ValueError(f"{name}: {m.in_channels} -> {m.out_channels} channels do not split into {m.groups} groups")
    return model.eval()
