"""A torch-pruning group turned into what surgery needs, or the reason it cannot be pruned.

A `Candidate` holds, for each layer the group touches, which of its channels each root channel removes
(so a policy is resolved without walking the graph again), and the group's *units*: a grouped
convolution keeps its group count, so it can only lose the same number of channels from each of its
conv groups. The root's channels are split into equal units (one per conv group; one unit when no
grouped conv is involved) and a policy removes the same number of channels from every unit.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch_pruning as tp
from torch import nn

OPTYPE = tp.ops.OPTYPE
SPLITS = {OPTYPE.SPLIT: "split/chunk", OPTYPE.UNBIND: "unbind"}


@dataclass(frozen=True)
class Item:
    """One layer's share of a group: removing root channel root_idxs[i] removes channel idxs[i] there."""

    name: str
    handler: Callable
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]


@dataclass
class Candidate:
    root: str  # the layer whose output channels define the group
    channels: int  # the root's output channels
    kind: str  # 'conv', 'depthwise', 'grouped' or 'linear'
    members: tuple[str, ...]
    items: list[Item] = field(default_factory=list)
    units: list[list[int]] = field(default_factory=list)  # root channels of each unit, in channel order
    group: Any = None  # torch-pruning's full group (for importance)
    reason: str | None = None  # why it cannot be pruned; None when it can

    @property
    def per_unit(self) -> int:
        return len(self.units[0]) if self.units else self.channels


def is_grouped_conv(m: nn.Module) -> bool:
    """A conv with groups that torch-pruning prunes as a plain conv (not depthwise)."""
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups != m.out_channels


def describe(graph: Any, model_names: dict[nn.Module, str], root: Any, group: Any) -> Candidate:
    """The candidate for one group, with `reason` set when surgery cannot follow it."""
    name = model_names[root]
    channels = int(root.out_channels if isinstance(root, nn.Conv2d) else root.out_features)
    members: list[str] = []
    items: list[Item] = []
    reason = None
    for it in group:
        node = it.dep.target
        mod = node.module
        if reason is None and node in graph.opaque:
            reason = graph.opaque[node]
        if reason is None and node.type in SPLITS:
            reason = f"its channels go through a {SPLITS[node.type]} whose sizes are fixed when forward runs"
        if reason is None and node.type == OPTYPE.SLICE and _on_channels(node):
            where = f"x[:, {_bound(node.module.start)}:{_bound(node.module.end)}]"
            reason = f"its channels are sliced in forward ({where}); pruning would shift them across the slice's bounds"
        mod_name = model_names.get(mod) if isinstance(mod, nn.Module) else None
        if mod_name is None:
            if node.type == OPTYPE.PARAMETER and reason is None:
                reason = f"it scales a bare nn.Parameter ({graph._param_to_name.get(mod, '?')}), which surgery does not prune"
            continue
        if mod_name not in members:
            members.append(mod_name)
        idxs = tuple(int(i) for i in it.idxs)
        size = graph.get_out_channels(mod) if graph.is_out_channel_pruning_fn(it.dep.handler) else graph.get_in_channels(mod)
        if reason is None and size is not None and any(i < 0 or i >= size for i in idxs):
            reason = f"torch-pruning maps its channels out of range on {mod_name} ({max(idxs)} >= {size})"
        items.append(Item(mod_name, it.dep.handler, idxs, tuple(int(r) for r in it.root_idxs)))
    cand = Candidate(name, channels, _kind(root, members, model_names), tuple(members), items, [list(range(channels))], group)
    cand.reason = reason or _split_units(cand, {n: m for m, n in model_names.items()})
    if cand.reason is None and len(cand.units) > 1:
        cand.kind = "grouped"
    return cand


def _kind(root: nn.Module, members: list[str], model_names: dict[nn.Module, str]) -> str:
    if isinstance(root, nn.Linear):
        return "linear"
    by_name = {n: m for m, n in model_names.items()}
    depthwise = any(
        isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels
        for m in map(by_name.get, members)
    )
    return "depthwise" if depthwise else "conv"


def _split_units(cand: Candidate, modules: dict[str, nn.Module]) -> str | None:
    """Split the root channels into equal units so that every grouped conv loses as many channels per conv group.

    Sets cand.units; returns the reason when no such split exists.
    """
    keys: dict[int, list[tuple[int, int]]] = defaultdict(list)
    grouped = []
    for k, it in enumerate(cand.items):
        conv: Any = modules[it.name]
        if not is_grouped_conv(conv):
            continue
        out = it.handler == tp.prune_conv_out_channels
        size = conv.out_channels if out else conv.in_channels
        per = size // conv.groups
        side = "output" if out else "input"
        if len(set(it.idxs)) != size:
            return f"only part of {it.name}'s {side} channels are in this group ({conv.groups} conv groups must shrink alike)"
        if per == 1:
            return f"{it.name} has one {side} channel per conv group (groups={conv.groups}): only whole groups could go"
        grouped.append((k, conv.groups))
        for i, r in zip(it.idxs, it.root_idxs):
            keys[r].append((k, i // per))
    if not grouped:
        return None
    cells: dict[tuple, list[int]] = defaultdict(list)
    for r in range(cand.channels):
        cells[tuple(sorted(set(keys[r])))].append(r)
    units = sorted(cells.values())
    if len({len(u) for u in units}) != 1:
        return "its grouped convolutions split these channels into unequal parts"
    for k, groups in grouped:
        per_group = Counter(q for key in cells for kk, q in key if kk == k)
        if len(per_group) != groups or len(set(per_group.values())) != 1:
            return f"its channels reach {cand.items[k].name}'s conv groups unevenly"
    cand.units = units
    return None


def _on_channels(slice_node: Any) -> bool:
    """A slice that takes part of the channels (a whole-range slice such as x[:, :] takes them all)."""
    sizes = getattr(slice_node.grad_fn, "_saved_self_sym_sizes", None)
    rank = len(sizes) if sizes is not None else 4
    op = slice_node.module
    if int(op.dim) % rank != 1:
        return False
    whole = sizes is not None and int(op.start) == 0 and int(op.step) == 1 and int(op.end) >= int(sizes[1])
    return not whole


def _bound(v: Any) -> str:
    return "" if v is None or int(v) >= 2**62 else str(int(v))
