"""Tracing a model into torch-pruning's dependency graph, keeping the tensor shapes torch-pruning does not keep.

The shapes let us set concat sizes exactly (torch-pruning infers them by walking the graph) and find the
ops whose channel mapping the graph cannot follow (see `untraceable`), before torch-pruning computes its
index mappings: a channel shuffle otherwise gets a flatten mapping that multiplies channel indices and
makes every group search through it explode.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ModelError
from .untraceable import cut_untraceable, set_concat_sizes

CAT_FUNCS = {torch.cat, torch.concat, torch.concatenate}


class ShapeRecorder(TorchFunctionMode):
    """Records the output shape of every autograd node made during a forward pass, and each concat's inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[Any, tuple[int, ...] | None] = {}
        self.cat_inputs: dict[Any, list[tuple[tuple[int, ...], bool]]] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            if out.grad_fn is not None:
                self.shapes[out.grad_fn] = tuple(out.shape)
                if func in CAT_FUNCS:
                    tensors = args[0] if args else (kwargs or {}).get("tensors", ())
                    self.cat_inputs[out.grad_fn] = [(tuple(t.shape), bool(t.requires_grad)) for t in tensors]
        elif isinstance(out, (tuple, list)):
            for t in out:  # chunk/split outputs share one autograd node: its shape is ambiguous
                if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                    self.shapes[t.grad_fn] = None
        return out


class Graph(tp.DependencyGraph):
    """torch-pruning's graph, with concat sizes taken from the trace and untraceable ops cut out.

    `opaque` maps each cut-out node to the reason its channels cannot be followed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.recorder: ShapeRecorder | None = None
        self.opaque: dict[Any, str] = {}

    def _build_dependency(self, module2node: dict) -> None:  # torch-pruning's hook between tracing and index mapping
        super()._build_dependency(module2node)
        if self.recorder is not None:
            self.opaque = set_concat_sizes(self, self.recorder)
            self.opaque.update(cut_untraceable(self, self.recorder, skip=set(self.opaque)))

    def name_of(self, node: Any) -> str:
        """A readable name for a node: the module's name, else its autograd op."""
        name = self._module2name.get(node.module)
        if name is not None:
            return name
        fn = node.grad_fn
        return fn.name() if fn is not None and hasattr(fn, "name") else type(node.module).__name__


def build_graph(model: nn.Module, example_input: torch.Tensor) -> Graph:
    """Trace `model` on `example_input` (one batch) into a dependency graph; a model that fails to run is a ModelError."""
    shape = "x".join(str(d) for d in example_input.shape)
    try:
        with torch.no_grad():
            model.eval()(example_input)
    except Exception as exc:
        raise ModelError(f"the model fails on a {shape} input: {_first_line(exc)}") from exc
    graph = Graph()
    graph.recorder = ShapeRecorder()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with graph.recorder:
                graph.build_dependency(model, example_inputs=(example_input,), verbose=False)
    except Exception as exc:
        raise ModelError(f"torch-pruning cannot build the dependency graph of this model: {_first_line(exc)}") from exc
    finally:
        graph.recorder = None  # its shapes were used while building; it keeps every traced autograd node alive
    return graph


def _first_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
