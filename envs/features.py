"""Static per-group layer features (AMC-style layer embedding) from one hooked forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hilprune.policy import PrunableGroup

KINDS = ("conv", "depthwise", "linear")


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str  # conv, depthwise or linear
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    input_size: int  # input height (1 for linear layers)
    macs: int
    params: int


@torch.no_grad()
def layer_table(model: nn.Module, example: torch.Tensor, groups: list[PrunableGroup]) -> list[LayerInfo]:
    """Features of each group's root layer (the layer whose output channels the group prunes)."""
    modules = dict(model.named_modules())
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for g in groups:

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor, name: str = g.name) -> None:
            seen.setdefault(name, (tuple(inp[0].shape), tuple(out.shape)))

        handles.append(modules[g.name].register_forward_hook(hook))
    try:
        model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    table = []
    for g in groups:
        mod = modules[g.name]
        in_shape, out_shape = seen.get(g.name, ((1, 1), (1, 1)))
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, nn.Conv2d):
            k, s = int(mod.kernel_size[0]), int(mod.stride[0])
            out_elems = 1
            for d in out_shape[1:]:
                out_elems *= int(d)
            macs = out_elems * (mod.in_channels // mod.groups) * k * k
            table.append(
                LayerInfo(
                    g.name,
                    g.kind,
                    mod.in_channels,
                    mod.out_channels,
                    k,
                    s,
                    int(in_shape[2]) if len(in_shape) > 2 else 1,
                    macs,
                    params,
                )
            )
        else:  # nn.Linear
            lin = mod if isinstance(mod, nn.Linear) else None
            cin = lin.in_features if lin is not None else g.channels
            cout = lin.out_features if lin is not None else g.channels
            table.append(LayerInfo(g.name, "linear", cin, cout, 1, 1, 1, cin * cout, params))
    return table
