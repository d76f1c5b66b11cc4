"""Training, fine-tuning and top-1 evaluation, deterministic under a seed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.bundle import DatasetBundle, Split
from .augment import random_crop_flip


def pick_device(device: str | None = None) -> torch.device:
    """'cuda' when a GPU is present (training only; latency is measured on the target device)."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrainConfig:
    epochs: float = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    crop_pad: int = 2
    flip: bool = True
    seed: int = 0
    label_smoothing: float = 0.0
    steps: int | None = None  # overrides epochs when set (fine-tuning by steps)


@dataclass
class TrainResult:
    val_accuracy: float
    train_loss: float
    wall_s: float
    steps: int
    history: list[dict] = field(default_factory=list)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 512, device: torch.device | None = None) -> float:
    """Top-1 accuracy of `model` on `split`, in [0, 1]."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split), batch_size):
        xb = split.x[i : i + batch_size].to(device)
        correct += int((model(xb).argmax(1).cpu() == split.y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(split))


def train(
    model: nn.Module, data: DatasetBundle, cfg: TrainConfig, device: str | None = None, progress: bool = True, desc: str = "train"
) -> TrainResult:
    """SGD with momentum, linear warm-up then cosine decay; evaluates on val after each epoch."""
    dev = pick_device(device)
    gen = seed_everything(cfg.seed)
    model.to(dev).train()
    n = len(data.train)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = cfg.steps if cfg.steps is not None else max(1, int(round(cfg.epochs * steps_per_epoch)))
    warmup = min(total // 2, int(cfg.warmup_epochs * steps_per_epoch))
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
    )

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))

    start = time.perf_counter()
    history: list[dict] = []
    step, running = 0, 0.0
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="step", dynamic_ncols=True)
    epoch = 0
    val_acc = float("nan")
    while step < total:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            if step >= total:
                break
            idx = order[i : i + cfg.batch_size]
            xb = random_crop_flip(data.train.x[idx], cfg.crop_pad, cfg.flip, gen).to(dev)
            yb = data.train.y[idx].to(dev)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.item()
            running = 0.98 * running + 0.02 * value if step else value
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", epoch=epoch)
        epoch += 1
        if step >= total or epoch % 1 == 0:
            val_acc = evaluate(model, data.val, device=dev)
            history.append(
                {"epoch": epoch, "step": step, "loss": running, "val_accuracy": val_acc, "elapsed_s": time.perf_counter() - start}
            )
            bar.set_postfix(loss=f"{running:.3f}", val=f"{val_acc:.4f}", epoch=epoch)
            model.train()
    bar.close()
    model.eval()
    return TrainResult(val_accuracy=val_acc, train_loss=running, wall_s=time.perf_counter() - start, steps=step, history=history)


def augmentation_for(data: DatasetBundle) -> dict[str, int | bool]:
    """The augmentation that suits a data set: no crop padding on 8x8 images, no flips for digits
    (a flipped 2 is not a 2). `hilprune train`, fine-tuning and export all use it."""
    return {"crop_pad": 0 if data.input_shape[1] <= 8 else 2, "flip": data.name != "digits"}


def finetune(
    model: nn.Module,
    data: DatasetBundle,
    epochs: float = 1.0,
    steps: int | None = None,
    lr: float = 0.01,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Short fine-tune of a pruned model: small learning rate, cosine decay, no warm-up."""
    cfg = TrainConfig(epochs=epochs, steps=steps, lr=lr, warmup_epochs=0.0, seed=seed, **augmentation_for(data))
    return train(model, data, cfg, device=device, progress=progress, desc="fine-tune")
