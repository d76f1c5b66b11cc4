"""Least-squares reconstruction of the layers that lost input channels (AMC's and ThiNet's step).

When a group's channels go, every layer that read them computes something else. Before any
fine-tuning, each such convolution (or linear layer) can be refitted so that, on a few train
images, it reproduces what the dense layer produced from what the pruned network now feeds it:
a linear least-squares problem per layer (im2col rows in, the dense outputs of the channels it
keeps out). Layers are refitted in forward order, each from the inputs the network refitted so
far gives it: solving them all from one pass of the unrefitted network compounded the errors and
left resnet20 at chance, where the sequential refit brought BN-recalibrated accuracy from 13-16%
to 65-86% on three random policies (before any fine-tuning).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_ROWS = 4096  # sampled im2col rows per layer: enough for a few hundred unknowns per output
# Ridge, relative to the mean diagonal of the normal equations. At 0.001 the refit reproduced the
# dense outputs on its few images by inflating the weights (1.8-2.0x the dense norm), and 40 steps of
# distillation from there lowered val accuracy (resnet56@0.4 81% -> 70%, mobilenetv2@0.4 89% -> 68%);
# at 0.1 the norm stays near the dense model's and the same fine-tune ends highest of 0.001-1 on
# resnet20, resnet56 and mobilenetv2 (+3, +16, +23 points over 0.001); 1 underfits (bench/ls_ridge.py).
DEFAULT_RIDGE = 0.1


def _rows_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """im2col rows [N * L, C_in * k * k] of a conv's input."""
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def reconstructable(pruned: nn.Module, dense: nn.Module) -> list[str]:
    """Layers of `pruned` that read fewer input channels than in `dense` and can be refitted
    (ungrouped convolutions with zero padding, linear layers)."""
    dense_modules = dict(dense.named_modules())
    out = []
    for name, m in pruned.named_modules():
        d = dense_modules.get(name)
        if isinstance(m, nn.Conv2d) and isinstance(d, nn.Conv2d):
            if m.groups == 1 and m.padding_mode == "zeros" and isinstance(m.padding, tuple) and m.in_channels < d.in_channels:
                out.append(name)
        elif isinstance(m, nn.Linear) and isinstance(d, nn.Linear) and m.in_features < d.in_features:
            out.append(name)
    return out


class _Reached(Exception):
    """Stops a forward pass once the layer being refitted has its input."""


def _solve(layer: nn.Conv2d | nn.Linear, x: torch.Tensor, y: torch.Tensor, rows: int, ridge: float, gen: torch.Generator) -> None:
    """Refit `layer` in place so that layer(x) approximates y (its kept outputs) in least squares."""
    if isinstance(layer, nn.Conv2d):
        a = _rows_conv(x, layer)
        b = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
    else:
        a, b = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if a.shape[0] > rows:
        pick = torch.randperm(a.shape[0], generator=gen)[:rows]
        a, b = a[pick], b[pick]
    if layer.bias is not None:
        a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
    a64, b64 = a.double(), b.double()
    gram = a64.T @ a64
    gram += ridge * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype)
    w = torch.linalg.solve(gram, a64.T @ b64).T.to(layer.weight.dtype)  # [out, unknowns]
    if layer.bias is not None:
        layer.bias.copy_(w[:, -1])
        w = w[:, :-1]
    layer.weight.copy_(w.reshape(layer.weight.shape))


@torch.no_grad()
def reconstruct(
    pruned: nn.Module,
    dense: nn.Module,
    images: torch.Tensor,
    removed_out: Mapping[str, set[int]],
    rows: int = DEFAULT_ROWS,
    ridge: float = DEFAULT_RIDGE,
    seed: int = 0,
) -> list[str]:
    """Refit, in place and in forward order, every layer of `pruned` that lost input channels
    (`reconstructable`) to reproduce the dense layer's outputs on `images`; returns the names
    refitted.

    `removed_out` names, per layer, the output channels the surgery removed (dense indexing), so
    each refitted layer is matched against the dense outputs it still produces. `ridge` is relative
    to the mean diagonal of the normal equations (a few rows must not blow the weights up, or a
    fine-tune from them diverges: DEFAULT_RIDGE). Both models are run in eval mode (the BN
    statistics as the surgery left them)."""
    names = reconstructable(pruned, dense)
    if not names:
        return []
    p_mods, d_mods = dict(pruned.named_modules()), dict(dense.named_modules())
    targets: dict[str, torch.Tensor] = {}
    order: list[str] = []

    def keep_output(name: str) -> object:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if name not in targets:
                order.append(name)
                dropped = removed_out.get(name, set())
                keep = torch.tensor([o for o in range(output.shape[1]) if o not in dropped], dtype=torch.long)
                targets[name] = output.detach().index_select(1, keep)

        return hook

    modes = (pruned.training, dense.training)
    pruned.eval(), dense.eval()
    hooks = [d_mods[n].register_forward_hook(keep_output(n)) for n in names]
    try:
        dense(images)
    finally:
        for h in hooks:
            h.remove()
    gen = torch.Generator().manual_seed(seed)
    done = []
    try:
        for name in order:  # forward order: each layer sees the inputs the refitted layers before it give
            layer, y = p_mods[name], targets.pop(name)
            if y.shape[1] != (layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features):
                continue  # the surgery's outputs do not match the plan: leave the layer as it is
            seen: list[torch.Tensor] = []

            def stop(module: nn.Module, inputs: tuple[torch.Tensor, ...], seen: list[torch.Tensor] = seen) -> None:
                seen.append(inputs[0].detach())
                raise _Reached

            handle = layer.register_forward_pre_hook(stop)
            try:
                pruned(images)
            except _Reached:
                pass
            finally:
                handle.remove()
            if seen:
                _solve(layer, seen[0], y, rows, ridge, gen)
                done.append(name)
    finally:
        pruned.train(modes[0]), dense.train(modes[1])
    return done


__all__ = ["DEFAULT_RIDGE", "DEFAULT_ROWS", "reconstruct", "reconstructable"]
