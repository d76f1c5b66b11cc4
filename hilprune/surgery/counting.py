"""MACs and parameter counts.

MACs count the multiply-accumulates of conv and linear layers (what dominates CNN cost),
from one hooked forward pass: ~20x cheaper than a generic op counter, which matters when
every RL episode reports them.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def macs_and_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    total = [0]

    def conv_hook(mod: nn.Conv2d, _inp: object, out: torch.Tensor) -> None:
        kh, kw = mod.kernel_size
        total[0] += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: nn.Linear, _inp: object, out: torch.Tensor) -> None:
        total[0] += out.numel() // out.shape[0] * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()(example_input[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total[0]), int(sum(p.numel() for p in model.parameters()))
