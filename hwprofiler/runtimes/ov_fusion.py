"""Which ONNX nodes OpenVINO's CPU plugin runs as one kernel, read from the model it compiled.

OpenVINO fuses by its own rules (a conv takes its bias, activation and a residual sum as
post-ops, but not a sum that would overwrite the conv's own input; element-wise chains become
one `Eltwise` or a `Subgraph`; layouts are its own), and they change with versions and CPUs.
So rather than imitate them, the graph is compiled with the device's settings and the executed
model is read back (`CompiledModel.get_runtime_model()`): each executed op's rt_info
`originalLayersNames` lists the operations fused into it. The ONNX nodes are renamed to tags
(`hp#<index>`) before compiling, so those names lead back to node indices.

A transformation may rename what it rewrites (a Conv with a folded BatchNormalization comes back
as `Multiply_123`); a node no executed op names therefore joins the kernel of its consumers (or,
failing that, of its producer), and a node computed only from constants was folded away.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import onnx

TAG = "hp#"
_TAG_RE = re.compile(r"^hp#(\d+)(?!\d)")
# Executed ops that compute nothing of the model's own: graph inputs and outputs, constants.
# (Reorders, OpenVINO's layout changes, have no original names and map to no node.)
_NOT_KERNELS = frozenset({"Input", "Output", "Const", "Parameter", "Result"})


def tag_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose node i is named `hp#i`."""
    tagged = onnx.ModelProto()
    tagged.CopyFrom(model)
    for i, node in enumerate(tagged.graph.node):
        node.name = f"{TAG}{i}"
    return tagged


def executed_layers(compiled: Any) -> list[tuple[str, list[str]]]:
    """(layerType, originalLayersNames) of each op a compiled model executes, in execution order."""
    rows = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer_type = info["layerType"].astype(str)
        if layer_type in _NOT_KERNELS:
            continue
        order = int(info["execOrder"].astype(str))
        names = [n.strip() for n in info["originalLayersNames"].astype(str).split(",") if n.strip()]
        rows.append((order, layer_type, names))
    return [(t, names) for _, t, names in sorted(rows, key=lambda r: r[0])]


def _node_of(name: str, outputs: dict[str, int]) -> int | None:
    match = _TAG_RE.match(name)
    if match:
        return int(match.group(1))
    return outputs.get(name)  # a graph output's op is named after the tensor


def node_groups(model: onnx.ModelProto, layers: Sequence[tuple[str, Sequence[str]]]) -> list[list[int]]:
    """Node indices of `model` per executed kernel, ordered by their first node.

    `layers` are `executed_layers` of the tagged model. Executed ops that share a node (one ONNX
    node split in two) form one kernel.
    """
    nodes = list(model.graph.node)
    outputs = {out: i for i, n in enumerate(nodes) for out in n.output}
    group_of: dict[int, int] = {}  # node -> group id
    groups: dict[int, set[int]] = {}
    for gid, (_, names) in enumerate(layers):
        members = {i for i in (_node_of(n, outputs) for n in names) if i is not None and 0 <= i < len(nodes)}
        if not members:
            continue
        merged = {group_of[i] for i in members if i in group_of}
        for other in merged:  # union with the kernels these nodes already belong to
            members |= groups.pop(other)
        groups[gid] = members
        for i in members:
            group_of[i] = gid
    _place_unnamed(nodes, model, group_of, groups)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def _place_unnamed(
    nodes: list[onnx.NodeProto], model: onnx.ModelProto, group_of: dict[int, int], groups: dict[int, set[int]]
) -> None:
    """Put each node no executed op names where it ran: fused into its consumers' kernel (or its
    producer's), folded away when it reads only constants, else a kernel of its own."""
    const = {t.name for t in model.graph.initializer}
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    for i, n in enumerate(nodes):  # topological order: constant chains fold front to back
        if i not in group_of and all(not x or x in const for x in n.input):
            const.update(n.output)
    unnamed = [i for i, n in enumerate(nodes) if i not in group_of and not set(n.output) <= const]
    changed = True
    while changed:
        changed = False
        for i in reversed(unnamed):
            if i in group_of:
                continue
            users = {group_of.get(j) for out in nodes[i].output for j in consumers.get(out, [])}
            feeders = {group_of.get(producer[x]) for x in nodes[i].input if x in producer and x not in const}
            for candidates in (users, feeders):
                gid = next(iter(candidates)) if len(candidates) == 1 else None
                if gid is not None:
                    groups[gid].add(i)
                    group_of[i] = gid
                    changed = True
                    break
    next_id = max(groups, default=-1) + 1
    for i in unnamed:
        if i not in group_of:
            groups[next_id] = {i}
            group_of[i] = next_id
            next_id += 1
