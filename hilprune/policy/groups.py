"""Prunable groups: sets of layers whose channels must be removed together.

torch-pruning's dependency graph couples layers joined by a residual add, a concat or a
depthwise conv; one group = one channel dimension = one prune ratio in a policy. A group
whose channels feed grouped convolutions is split into `units` equal parts (one per conv
group): `channels` counts the channels of one unit, and a ratio removes the same channels
from every unit. Layers whose channels cannot be pruned safely are `ExcludedLayer`s, each
with the reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from torch import nn

from ..depgraph import Graph, describe, search_groups
from ..depgraph import build_graph as _build_graph


@dataclass(frozen=True)
class PrunableGroup:
    name: str  # the root module's name: the layer whose output channels define the group
    members: tuple[str, ...]  # every module the group touches (convs, BNs, next layers' inputs)
    channels: int  # channels of the dimension before pruning (of one unit when units > 1)
    kind: str  # 'conv', 'depthwise', 'grouped' or 'linear' (how the root's channels are used)
    index: int  # position in forward order
    units: int = 1  # equal parts of the dimension (conv groups of grouped convs); the root has channels * units

    @property
    def total_channels(self) -> int:
        return self.channels * self.units


@dataclass(frozen=True)
class ExcludedLayer:
    """A layer whose output channels are left unpruned, and why."""

    name: str
    reason: str
    members: tuple[str, ...] = ()


def output_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module | None:
    """The layer that produces the model's output (its classes must never be pruned)."""
    last: list[nn.Module] = []

    def hook(mod: nn.Module, _inp: object, _out: object) -> None:
        last.append(mod)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for h in handles:
            h.remove()
    return last[-1] if last else None


def build_graph(model: nn.Module, example_input: torch.Tensor) -> Graph:
    """torch-pruning's dependency graph of `model`, with the ops it cannot follow cut out (see hilprune.depgraph)."""
    return _build_graph(model, example_input)


def find_groups(model: nn.Module, example_input: torch.Tensor, graph: Graph | None = None) -> list[PrunableGroup]:
    """The model's structurally prunable groups in forward order (the output layer is never pruned).

    Structure only: `hilprune.surgery.Surgeon` also trial-prunes each group and keeps those that work.
    """
    groups, _excluded = analyse_groups(model, example_input, graph)
    return groups


def analyse_groups(
    model: nn.Module, example_input: torch.Tensor, graph: Graph | None = None, progress: bool | None = False
) -> tuple[list[PrunableGroup], list[ExcludedLayer]]:
    """(prunable groups, excluded layers), both in forward order, from the dependency graph alone."""
    graph = graph if isinstance(graph, Graph) else build_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    ignored = [m for m in [output_layer(model, example_input)] if m is not None]
    found = search_groups(graph, ignored, progress=progress)
    cands = [describe(graph, names, m, g) for m, g in found.groups]
    excluded = [ExcludedLayer(names[m], reason) for m, reason in found.failed]
    excluded += [ExcludedLayer(c.root, c.reason, c.members) for c in cands if c.reason]
    return to_groups(model, [c for c in cands if c.reason is None]), sort_excluded(model, excluded)


def to_groups(model: nn.Module, candidates: list) -> list[PrunableGroup]:
    """PrunableGroups of `hilprune.depgraph.Candidate`s, in forward order."""
    order = {n: i for i, (n, _m) in enumerate(model.named_modules())}
    ordered = sorted(candidates, key=lambda c: order[c.root])
    return [
        PrunableGroup(name=c.root, members=c.members, channels=c.per_unit, kind=c.kind, index=i, units=len(c.units))
        for i, c in enumerate(ordered)
    ]


def sort_excluded(model: nn.Module, excluded: list[ExcludedLayer]) -> list[ExcludedLayer]:
    order = {n: i for i, (n, _m) in enumerate(model.named_modules())}
    return sorted(excluded, key=lambda e: order.get(e.name, len(order)))


def groups_signature(groups: list[PrunableGroup]) -> str:
    """A short hash of group names and sizes: a policy made for another architecture won't match."""
    payload = json.dumps([[g.name, g.channels] + ([g.units] if g.units != 1 else []) for g in groups]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
