"""A structural twin of a model with seeded random weights, for trial prunes.

Whether a group can be pruned is a question about structure, not weights: on the twin, the answer
is the same for `policy init` (no weights) and `prune` (trained weights), and a dead or zero
channel in a trained model cannot hide a wrong channel mapping.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def scrambled(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` whose parameters and normalisation statistics are seeded random values."""
    twin = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(seed)
    for m in twin.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    for p in twin.parameters():
        if p.dim() >= 2:
            fan_in = max(1, p[0].numel())
            p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        else:
            p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.75 if p.dim() == 1 else torch.rand(p.shape, generator=gen))
    return twin
