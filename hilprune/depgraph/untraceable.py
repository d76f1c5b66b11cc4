"""Ops whose channel mapping torch-pruning's dependency graph cannot follow, found from traced shapes and cut out.

torch-pruning treats every op it does not know as element-wise (channel i in, channel i out). That is
wrong for a channel shuffle (view to [N, g, C/g, H, W], transpose, reshape back), for ops that reduce or
change the channel count, and for a concat of a tensor that does not come from a layer (its offsets
are unknown). Such a node is made *opaque*: its dependencies are removed, so group searches stop there
(instead of walking on with wrong indices, which also made them explode), and every group that reaches
it is left unpruned with the reason recorded here. A size-1 channel input broadcast into an element-wise
op (spatial attention, gates) shares no channels with the op's output: only that edge is cut.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import torch_pruning as tp

if TYPE_CHECKING:
    from .trace import Graph, ShapeRecorder

OPTYPE = tp.ops.OPTYPE
MAPPED = {OPTYPE.SPLIT, OPTYPE.UNBIND, OPTYPE.CONCAT, OPTYPE.SLICE, OPTYPE.OUTPUT}  # torch-pruning maps (or skips) these


def set_concat_sizes(graph: Graph, rec: ShapeRecorder) -> dict[Any, str]:
    """Give every channel concat its traced input sizes; a concat whose inputs do not all come from the graph is opaque."""
    opaque = {}
    for node in graph.module2node.values():
        if node.type != OPTYPE.CONCAT:
            continue
        inputs = rec.cat_inputs.get(node.grad_fn)
        if not inputs:
            continue
        rank = len(inputs[0][0])
        dim = getattr(node.grad_fn, "_saved_dim", 1)
        if rank < 2 or dim % rank != 1:
            continue
        if len(inputs) != len(node.inputs) or not all(req for _shape, req in inputs):
            opaque[node] = "its channels are concatenated with a tensor that comes from no layer (offsets unknown)"
            continue
        node.module.concat_sizes = [shape[1] for shape, _req in inputs]
    return opaque


def cut_untraceable(graph: Graph, rec: ShapeRecorder, skip: set[Any] | None = None) -> dict[Any, str]:
    """Cut opaque ops and broadcast edges out of the graph; returns {opaque node: reason}."""
    opaque: dict[Any, str] = {}
    for node in list(graph.module2node.values()):
        if node.module in graph._module2name or node.type == OPTYPE.PARAMETER:
            continue  # a layer (or a bare parameter): torch-pruning knows its channels
        if skip and node in skip:
            opaque[node] = ""
            continue
        reason, broadcast = _judge(graph, node, rec)
        if reason:
            opaque[node] = reason
        for inp in broadcast:
            _cut_edge(node, inp)
    for node in opaque:
        node.dependencies = []
        if node.type == OPTYPE.RESHAPE:
            node.type = OPTYPE.ELEMENTWISE  # keeps torch-pruning's reshape index mapping off it
    return {n: r for n, r in opaque.items() if r}


def _shape(node: Any, rec: ShapeRecorder) -> tuple[int, ...] | None:
    if node.type in (OPTYPE.SPLIT, OPTYPE.UNBIND):
        return None
    return rec.shapes.get(node.grad_fn)


def _judge(graph: Graph, node: Any, rec: ShapeRecorder) -> tuple[str | None, list[Any]]:
    """(why the node is opaque or None, input nodes broadcast into it)."""
    fn = node.grad_fn
    name = fn.name() if fn is not None and hasattr(fn, "name") else type(node.module).__name__
    op = op_name(name)
    out = _shape(node, rec)
    if out is None or node.type in MAPPED:
        return None, []
    if node.type == OPTYPE.RESHAPE:
        sizes = getattr(fn, "_saved_self_sym_sizes", None) or getattr(fn, "_saved_self_sizes", None)
        src = tuple(int(s) for s in sizes) if sizes is not None else None
        if src is None and node.inputs:
            src = _shape(node.inputs[0], rec)
        if src is None or _keeps_channels(src, out):
            return None, []
        return f"a reshape {_fmt(src)} -> {_fmt(out)} regroups the channels (e.g. a channel shuffle)", []
    if "Permute" in name or "Transpose" in name:
        rank = len(out)
        if "Permute" in name:
            dims = [int(d) % rank for d in getattr(fn, "_saved_dims", range(rank))]
            moved = dims[:2] != [0, 1]
        else:
            pair = {int(getattr(fn, "_saved_dim0", 0)) % rank, int(getattr(fn, "_saved_dim1", 0)) % rank}
            moved = bool(pair & {0, 1}) and len(pair) == 2
        return (f"a {op} moves the channel dimension (e.g. a channel shuffle)" if moved else None), []
    broadcast = []
    for inp in node.inputs:
        src = _shape(inp, rec)
        if src is None or len(src) < 2:
            continue
        if len(out) < 2:
            return f"{op} reduces over the channels", []
        if src[1] == out[1]:
            continue
        if src[1] == 1:
            broadcast.append(inp)
            continue
        return f"{op} changes the channel count ({src[1]} -> {out[1]})", []
    return None, broadcast


def op_name(grad_fn_name: str) -> str:
    """'AmaxBackward0' -> 'amax'."""
    return re.sub(r"Backward\d*$", "", grad_fn_name).lower() or grad_fn_name


def _keeps_channels(src: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """A reshape torch-pruning maps correctly: channels kept in place, a flatten, or an unflatten."""
    if len(src) >= 2 and len(out) >= 2 and src[:2] == out[:2]:
        return True
    if len(out) == 2 and len(src) >= 2 and src[0] == out[0] and out[1] == math.prod(src[1:]):
        return True
    return len(src) == 2 and len(out) >= 2 and src[0] == out[0] and src[1] == math.prod(out[1:])


def _cut_edge(a: Any, b: Any) -> None:
    a.dependencies = [d for d in a.dependencies if d.target is not b]
    b.dependencies = [d for d in b.dependencies if d.target is not a]


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
