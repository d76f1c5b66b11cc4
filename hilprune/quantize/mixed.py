"""Per-group precision: which ONNX nodes a policy keeps in fp32.

torch's TorchScript exporter names a node by its module scopes, e.g. `/layer1/layer1.0/conv1/Conv`
for module `layer1.0.conv1` and `/features/features.1/conv/conv.0/Conv` for `features.1.conv.0`: a
container's child appears as `parent.child`. That maps each Conv/Gemm node back to its module, and
so to the policy group whose root it is.
"""

from __future__ import annotations

import onnx

from ..policy import Policy

LAYER_OPS = ("Conv", "Gemm", "MatMul")


def module_of_node(node_name: str) -> str | None:
    """The module a TorchScript-exported node belongs to (`/a/a.0/conv1/Conv` -> `a.0.conv1`)."""
    parts = [p for p in node_name.split("/") if p][:-1]
    if not parts:
        return None
    qualified, prev = parts[0], parts[0]
    for part in parts[1:]:
        # `prev.child` is a child of the previous scope; anything else is an attribute of it
        qualified += "." + (part[len(prev) + 1 :] if part.startswith(prev + ".") else part)
        prev = part
    return qualified


def fp32_nodes(onnx_bytes: bytes, policy: Policy) -> list[str]:
    """Names of the layer nodes to leave in float: the roots of groups marked fp32, when the
    policy marks any group int8 (a policy that marks none quantizes the whole model)."""
    if not policy.int8_groups():
        return []
    keep = {g.name for g in policy.groups if g.precision == "fp32"}
    graph = onnx.load_from_string(onnx_bytes).graph
    return [n.name for n in graph.node if n.op_type in LAYER_OPS and module_of_node(n.name) in keep]
