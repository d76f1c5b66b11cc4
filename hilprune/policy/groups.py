"""Prunable groups: sets of layers whose channels must be removed together.

torch-pruning's dependency graph couples layers joined by a residual add, a concat or a
depthwise conv; one group = one channel dimension = one prune ratio in a policy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn


@dataclass(frozen=True)
class PrunableGroup:
    name: str  # the root module's name: the layer whose output channels define the group
    members: tuple[str, ...]  # every module the group touches (convs, BNs, next layers' inputs)
    channels: int  # channels of the dimension before pruning
    kind: str  # 'conv', 'depthwise' or 'linear' (the root's type)
    index: int  # position in forward order


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


def build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)


def find_groups(model: nn.Module, example_input: torch.Tensor, graph: tp.DependencyGraph | None = None) -> list[PrunableGroup]:
    """The model's prunable groups in forward order (the output layer is never pruned)."""
    graph = graph or build_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, (n, _m) in enumerate(model.named_modules())}
    ignored = [m for m in [output_layer(model, example_input)] if m is not None]
    found = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        root = group[0].dep.target.module
        if not isinstance(root, (nn.Conv2d, nn.Linear)) or root not in names:
            continue
        channels = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        members = []
        for item in group:
            mod = item.dep.target.module
            if mod in names and names[mod] not in members:
                members.append(names[mod])
        depthwise = any(
            isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
            for m in (dict(model.named_modules())[n] for n in members)
        )
        kind = "linear" if isinstance(root, nn.Linear) else ("depthwise" if depthwise else "conv")
        found.append((order[names[root]], names[root], tuple(members), channels, kind))
    found.sort()
    return [PrunableGroup(name=n, members=mem, channels=ch, kind=k, index=i) for i, (_o, n, mem, ch, k) in enumerate(found)]


def groups_signature(groups: list[PrunableGroup]) -> str:
    """A short hash of group names and sizes: a policy made for another architecture won't match."""
    payload = json.dumps([[g.name, g.channels] for g in groups]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
