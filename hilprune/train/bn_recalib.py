"""BatchNorm recalibration: re-estimate running statistics on K training batches.

After channels are removed, the surviving BN statistics no longer match the inputs they
see; recalibrating them makes un-fine-tuned accuracy a much better predictor of
fine-tuned accuracy (the trick AMC, NetAdapt and EagleEye rely on)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.bundle import Split

# What the search evaluator uses; export repeats it so 'val before fine-tune' matches the search.
BN_BATCHES, BN_BATCH_SIZE = 10, 25


@torch.no_grad()
def recalibrate_bn(model: nn.Module, split: Split, batches: int = 10, batch_size: int = 128, seed: int = 0) -> nn.Module:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return model.eval()
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the K batches
    model.train()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split), generator=gen)
    device = next(model.parameters()).device
    for b in range(batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        if len(idx) == 0:
            break
        model(split.x[idx].to(device))
    for m in bns:
        m.momentum = saved[m]
    return model.eval()
