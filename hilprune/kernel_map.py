"""From a policy to the kernels the device will run, without surgery.

Pruning never changes a graph's structure, only channel counts. So the dense model's fused
kernels (hwprofiler.kernels_from_onnx on its ONNX export) are computed once, and each kernel's
input and output channels are tied to the prunable group that sets them. To find those ties,
each group is pruned alone once and we record which kernels changed. After that, the kernel
list for any policy is a lookup. A LUT predicts latency for a policy in well under a
millisecond, so an RL environment can call it at every step.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
from hwprofiler import KernelSpec, kernels_from_onnx

from .export import to_onnx_bytes
from .policy import channels_after
from .surgery import Surgeon


@dataclass(frozen=True)
class _Tie:
    in_group: int | None  # index of the group that sets the kernel's input channels
    out_group: int | None  # ... its output channels
    depthwise: bool  # groups == cin == cout: the group count follows the channels


class KernelMap:
    """Maps per-group kept channels to the kernel list of the pruned model."""

    def __init__(self, surgeon: Surgeon, batch: int = 1) -> None:
        self.groups = surgeon.groups
        self.input_shape = tuple(surgeon.example.shape[1:])
        self.dense = kernels_from_onnx(to_onnx_bytes(surgeon.dense, self.input_shape, batch), batch=batch)
        ins: list[int | None] = [None] * len(self.dense)
        outs: list[int | None] = [None] * len(self.dense)
        for gi, g in enumerate(self.groups):
            if g.channels < 2:
                continue
            probe = {h.name: 0.0 for h in self.groups} | {g.name: 0.5}
            pruned = surgeon.apply(surgeon.policy(probe, max_ratio=1.0), count=False).model
            kernels = kernels_from_onnx(to_onnx_bytes(pruned, self.input_shape, batch), batch=batch)
            if len(kernels) != len(self.dense):
                raise RuntimeError(f"pruning group {g.name} changed the kernel graph ({len(self.dense)} -> {len(kernels)} kernels)")
            for i, (k0, k1) in enumerate(zip(self.dense, kernels)):
                if k1.cin != k0.cin:
                    ins[i] = gi
                if k1.cout != k0.cout:
                    outs[i] = gi
        self.ties = [_Tie(ins[i], outs[i], k.op == "conv" and k.groups > 1 and k.groups == k.cin == k.cout)
                     for i, k in enumerate(self.dense)]

    def kernels(self, kept: Sequence[int]) -> list[KernelSpec]:
        """Kernels of the model whose group i keeps kept[i] channels."""
        out = []
        for k, tie in zip(self.dense, self.ties):
            cin = kept[tie.in_group] if tie.in_group is not None else k.cin
            cout = kept[tie.out_group] if tie.out_group is not None else k.cout
            out.append(self.kernels_at(k, tie, cin, cout))
        return out

    def kept(self, ratios: Mapping[str, float] | Sequence[float], round_to: int = 1) -> list[int]:
        """Kept channels per group for requested ratios (same rounding as the policy)."""
        values = [ratios[g.name] for g in self.groups] if isinstance(ratios, Mapping) else list(ratios)
        return [channels_after(g.channels, r, round_to) for g, r in zip(self.groups, values)]

    def kernels_for(self, ratios: Mapping[str, float] | Sequence[float], round_to: int = 1) -> list[KernelSpec]:
        return self.kernels(self.kept(ratios, round_to))

    def reachable(self, grid: Sequence[float], round_to: int = 1) -> list[KernelSpec]:
        """Every distinct kernel that a policy on `grid` (ratios per group) can produce."""
        seen: dict[str, KernelSpec] = {}
        for k, tie in zip(self.dense, self.ties):
            choices_in = _choices(self.groups, tie.in_group, grid, round_to, k.cin)
            choices_out = _choices(self.groups, tie.out_group, grid, round_to, k.cout)
            same = tie.in_group is not None and tie.in_group == tie.out_group
            pairs = [(c, c) for c in choices_out] if same else itertools.product(choices_in, choices_out)
            for cin, cout in pairs:
                spec = self.kernels_at(k, tie, cin, cout)
                seen.setdefault(spec.key(), spec)
        return list(seen.values())

    @staticmethod
    def kernels_at(k: KernelSpec, tie: _Tie, cin: int, cout: int) -> KernelSpec:
        if k.op not in ("conv", "linear"):
            cin = cout
        return replace(k, cin=cin, cout=cout, groups=cin if tie.depthwise else k.groups)


def _choices(groups: Sequence, gi: int | None, grid: Sequence[float], round_to: int, dense: int) -> list[int]:
    if gi is None:
        return [dense]
    return sorted({channels_after(groups[gi].channels, float(r), round_to) for r in grid})


def ratio_grid(max_ratio: float, step: float) -> list[float]:
    """0, step, 2*step, ... up to max_ratio."""
    return [round(float(v), 6) for v in np.arange(0.0, max_ratio + 1e-9, step)]
