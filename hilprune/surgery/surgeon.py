"""Apply a layer-wise policy to a dense model: channels are physically removed, so the
result is a smaller dense model (and a smaller, faster ONNX graph).

The `Surgeon` builds torch-pruning's dependency graph and ranks every group's channels once
on the dense model. A group's channels are its own (pruning one group never renumbers
another's), so a policy is applied by resolving each group's dependents on the dense graph
(original indexing), merging the indices per layer and dimension, and calling
torch-pruning's pruning functions on a copy: no graph rebuild per policy, cheap enough for
one RL episode each.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from ..policy import Policy, PrunableGroup, build_graph, find_groups, validate_policy
from .counting import macs_and_params
from .importance import NEEDS_GRADIENTS, make_importance


@dataclass
class SurgeryResult:
    model: nn.Module
    policy: Policy
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    def report(self) -> dict[str, Any]:
        return {
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


def _root_and_fn(model: nn.Module, name: str) -> tuple[nn.Module, Any]:
    module = dict(model.named_modules())[name]
    fn = tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels
    return module, fn


class Surgeon:
    """Prunes copies of one dense model by policy.

    `calibration` (inputs, labels) is needed only for gradient-based criteria (taylor).
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, int, int],
        model_identity: dict[str, Any],
        importance: str = "l1",
        calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.dense = copy.deepcopy(model).cpu().eval()
        self.example = torch.randn(1, *input_shape)
        self.identity = model_identity
        self.importance = importance
        graph = build_graph(self.dense, self.example)
        self.graph = graph
        self._names = {m: n for n, m in self.dense.named_modules()}
        self.groups: list[PrunableGroup] = find_groups(self.dense, self.example, graph)
        self.macs_before, self.params_before = macs_and_params(self.dense, self.example)
        self.ranking = self._rank(graph, calibration)

    def _rank(self, graph: tp.DependencyGraph, calibration: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Channel indices of each group, least important first."""
        imp = make_importance(self.importance)
        if self.importance in NEEDS_GRADIENTS:
            if calibration is None:
                raise ValueError(f"importance {self.importance!r} needs a calibration batch")
            self.dense.zero_grad()
            with torch.enable_grad():
                F.cross_entropy(self.dense(calibration[0]), calibration[1]).backward()
        ranking = {}
        for g in self.groups:
            root, fn = _root_and_fn(self.dense, g.name)
            group = graph.get_pruning_group(root, fn, list(range(g.channels)))
            scores = imp(group)
            if scores is None:  # criterion not applicable (e.g. bn-scale on a group without BN): keep order
                scores = torch.arange(g.channels, dtype=torch.float32)
            ranking[g.name] = torch.argsort(scores.detach().float().cpu(), stable=True)
        self.dense.zero_grad(set_to_none=True)
        return ranking

    def policy(self, ratios: Mapping[str, float] | list[float], round_to: int = 1, max_ratio: float = 0.9) -> Policy:
        return Policy.from_ratios(self.groups, ratios, self.identity, self.importance, round_to, max_ratio)

    def _plan(self, policy: Policy) -> dict[tuple[str, Any], set[int]]:
        """(module name, pruning function) -> channel indices to remove, in dense indexing."""
        plan: dict[tuple[str, Any], set[int]] = {}
        for g in policy.groups:
            n_prune = g.channels_before - g.channels_after
            if n_prune <= 0:
                continue
            root, fn = _root_and_fn(self.dense, g.name)
            group = self.graph.get_pruning_group(root, fn, self.ranking[g.name][:n_prune].tolist())
            for item in group:
                name = self._names.get(item.dep.target.module)
                if name is None:  # an op node (add, concat, flatten): nothing to cut
                    continue
                plan.setdefault((name, item.dep.handler), set()).update(int(i) for i in item.idxs)
        return plan

    def apply(self, policy: Policy, count: bool = True) -> SurgeryResult:
        """A pruned copy of the dense model; the dense model is left untouched."""
        policy = validate_policy(policy, self.groups, self.identity)
        model = copy.deepcopy(self.dense)
        modules = dict(model.named_modules())
        for (name, handler), idxs in self._plan(policy).items():
            handler(modules[name], sorted(idxs))
        model.eval()
        macs, params = macs_and_params(model, self.example) if count else (-1, -1)
        policy.metrics.update(
            {"macs_before": self.macs_before, "macs_after": macs, "params_before": self.params_before, "params_after": params}
        )
        return SurgeryResult(model, policy, self.macs_before, macs, self.params_before, params)
