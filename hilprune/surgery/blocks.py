"""Whole residual blocks: which a model has, how much each costs to remove, and removing them.

A residual block computes ``x + f(x)`` (possibly followed by an activation) with an identity
shortcut; removed, it becomes ``x``. On INT8 graphs this pays where channel pruning cannot: a
narrow INT8 conv still pays its fixed per-kernel costs (quantize, requantize, the call), a removed
block pays none (resnet56 on onnxruntime, AMD EPYC with AVX-512 VNNI: INT8 with widths alone
stopped at 2.6x over dense fp32, INT8 with 8 of its 25 removable blocks removed ran 3.6x;
docs/benchmarks.md, "prune_quantize"). Blocks are found by tracing each
submodule with torch.fx, so user models qualify when their blocks are written that way; a module
that does not trace, or whose output is not ``input + branch``, is simply not a block.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..depgraph.progress import Progress, progress_of
from ..errors import SurgeryError

_ADDS = {operator.add, operator.iadd, torch.add}
_ACTIVATIONS_F = {F.relu, torch.relu, F.relu6, F.hardtanh, F.silu, F.gelu}
_ACTIVATIONS_M = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU)
_ACTIVATION_METHODS = {"relu", "relu_"}


def _is_input(node: fx.Node, placeholder: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`node` is the block's input, directly or through identity modules (a shortcut that does nothing)."""
    while node is not placeholder:
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), nn.Identity) and node.args:
            arg = node.args[0]
            if not isinstance(arg, fx.Node):
                return False
            node = arg
        else:
            return False
    return True


def _strip_activation(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """The node before a trailing activation (``relu(x + f(x))`` is removed like ``x + f(x)``)."""
    is_act = (
        (node.op == "call_function" and node.target in _ACTIVATIONS_F)
        or (node.op == "call_method" and node.target in _ACTIVATION_METHODS)
        or (node.op == "call_module" and isinstance(modules.get(str(node.target)), _ACTIVATIONS_M))
    )
    if is_act and node.args and isinstance(node.args[0], fx.Node):
        return node.args[0]
    return node


def is_residual(module: nn.Module) -> bool:
    """`module.forward(x)` returns ``x + branch(x)`` (or an activation of it) with an identity shortcut."""
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception:  # control flow on values, unsupported ops: not a block we can reason about
        return False
    modules = dict(module.named_modules())
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    outputs = [n for n in graph.nodes if n.op == "output"]
    if len(placeholders) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return False
    x = placeholders[0]
    node = _strip_activation(outputs[0].args[0], modules)
    is_add = (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "__add__")
    )
    if not is_add or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
        return False
    a, b = node.args
    assert isinstance(a, fx.Node) and isinstance(b, fx.Node)
    return _is_input(a, x, modules) != _is_input(b, x, modules)  # one side is the input, the other a branch


def residual_blocks(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the submodules that are residual blocks with an identity shortcut, keeping their
    input's shape (so removing one leaves a valid model), in the order they first finish in a
    forward pass (forward order for blocks not nested in one another)."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    order: list[str] = []
    hooks = []
    for name, m in model.named_modules():
        if not name or not any(True for _ in m.children()):
            continue  # the model itself and leaf layers are not blocks

        def hook(mod: nn.Module, args: tuple, out: object, name: str = name) -> None:
            if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                shapes[name] = (tuple(args[0].shape), tuple(out.shape))
                order.append(name)

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    found: list[str] = []
    for name in dict.fromkeys(order):  # each module once, where its hook first fired
        if shapes[name][0] == shapes[name][1] and is_residual(modules[name]):
            found.append(name)
    return found


def without_blocks(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of `model` with the named submodules replaced by identities (physically removed: their
    layers are gone from the copy and from its ONNX graph)."""
    out = copy.deepcopy(model)
    if not names:
        return out
    modules = dict(out.named_modules())
    for name in names:
        if name not in modules or not name:
            raise SurgeryError(f"no block {name!r} in this model")
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name], child, nn.Identity())
    return out


def rank_blocks(
    model: nn.Module,
    blocks: Sequence[str],
    score: Callable[[nn.Module], float],
    progress: Progress | bool | None = None,
) -> list[tuple[str, float]]:
    """Each block with `score` of the model without it (say, val accuracy), best first: the blocks
    whose removal costs least come first (ties in forward order). `progress`: a bar with the time
    left on stderr (None: when stderr is a terminal)."""
    scored = []
    with progress_of(progress) as bar:
        bar.stage("ranking residual blocks", len(blocks))
        for name in blocks:
            scored.append((name, float(score(without_blocks(model, [name])))))
            bar.advance()
    index = {name: i for i, name in enumerate(blocks)}
    return sorted(scored, key=lambda s: (-s[1], index[s[0]]))
