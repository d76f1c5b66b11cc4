"""Input-channel pruning of grouped convolutions, which torch-pruning gets wrong.

torch-pruning's conv pruner keeps the first 1/groups of the kept input indices and applies them to
every conv group (an index_select past the group's width fails: "INDICES element is out of DATA
bounds"). Here each conv group keeps its own input channels; every group must lose as many.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch_pruning as tp
from torch import nn


def prune_grouped_conv_in_channels(conv: nn.Conv2d, idxs: Sequence[int]) -> nn.Conv2d:
    """Remove input channels `idxs` from a grouped conv, keeping its group count."""
    groups, per = conv.groups, conv.in_channels // conv.groups
    removed = set(int(i) for i in idxs)
    keep = [[j for j in range(per) if q * per + j not in removed] for q in range(groups)]
    if len({len(k) for k in keep}) != 1 or not keep[0]:
        raise ValueError(f"grouped conv ({groups} groups) must keep the same number (>= 1) of input channels in every group")
    out_per = conv.out_channels // groups
    index = torch.tensor(keep, dtype=torch.long).repeat_interleave(out_per, dim=0)  # [out_channels, kept per group]
    weight = conv.weight.data
    index = index.view(*index.shape, *([1] * (weight.dim() - 2))).expand(-1, -1, *weight.shape[2:])
    conv.weight = nn.Parameter(torch.gather(weight, 1, index.to(weight.device)), requires_grad=conv.weight.requires_grad)
    conv.in_channels = groups * len(keep[0])
    return conv


def handler_for(module: nn.Module, handler: Callable) -> Callable:
    """The pruning function to call for `module` in place of torch-pruning's `handler`."""
    if handler == tp.prune_conv_in_channels and isinstance(module, nn.Conv2d) and 1 < module.groups != module.out_channels:
        return prune_grouped_conv_in_channels
    return handler
