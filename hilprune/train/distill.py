"""Knowledge distillation from the dense model: the evaluator's short proxy fine-tune and the
fine-tune of `hilprune export` share one loss and one loop.

The loss is Hinton et al.'s: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``
with both distributions softened at temperature T (the T^2 keeps the soft term's gradients on the
scale of the hard one). A pruned network is far from its teacher, and the teacher's full output
distribution carries more per image than a label: a few dozen steps recover more accuracy with it.

Two sources of batches feed the same loop:

- `SharedBatches` (the evaluator): step s always draws the same augmented train images, seeded by
  (seed, s), and the teacher's logits for them are computed once and kept. Every policy a search
  scores is fine-tuned on the same data (differences between policies are not differences in
  data), the teacher costs nothing after the first policy, and with a constant learning rate N
  steps then M - N more equal M steps, so a policy scored at a cheap rung is continued, not
  started again.
- `EpochBatches` (export): epochs of shuffled train images, the teacher run on each batch, on a
  GPU when there is one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.bundle import DatasetBundle, Split
from .augment import random_crop_flip
from .loop import TrainResult, augmentation_for, evaluate, pick_device

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, labels, teacher logits


@dataclass(frozen=True)
class KDConfig:
    """Distillation settings: the soft-target temperature and weight, and plain SGD's."""

    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft targets; 1 - alpha on the labels
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and 0.0 <= self.alpha <= 1.0 and self.lr > 0 and self.batch_size >= 1):
            raise ValueError(f"bad distillation settings: {self}")


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """Soft targets at `temperature` (weight `alpha`) plus cross-entropy on the labels."""
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student, labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (no correlation between neighbouring steps)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


class SharedBatches:
    """Step-indexed batches of augmented train images with the teacher's logits, computed once per step.

    Images are drawn with replacement (a seeded draw per step, so any step can be produced
    without the ones before it). Keeps `steps x batch_size` images and logits in memory.
    """

    def __init__(
        self, teacher: nn.Module, split: Split, batch_size: int, seed: int = 0, crop_pad: int = 0, flip: bool = False
    ) -> None:
        self.teacher, self.split = teacher, split
        self.batch_size, self.seed, self.crop_pad, self.flip = int(batch_size), int(seed), int(crop_pad), bool(flip)
        self._cache: dict[int, Batch] = {}
        self.teacher_s = 0.0  # seconds spent running the teacher (once per step)

    def __len__(self) -> int:
        return len(self._cache)

    @torch.no_grad()
    def __call__(self, step: int) -> Batch:
        hit = self._cache.get(step)
        if hit is not None:
            return hit
        gen = torch.Generator().manual_seed(mix_seed(self.seed, 0x4B44, step))
        idx = torch.randint(0, len(self.split), (self.batch_size,), generator=gen)
        x = random_crop_flip(self.split.x[idx], self.crop_pad, self.flip, gen)
        t0 = time.perf_counter()
        was_training = self.teacher.training
        self.teacher.eval()
        logits = self.teacher(x)
        self.teacher.train(was_training)
        self.teacher_s += time.perf_counter() - t0
        batch = (x, self.split.y[idx], logits.detach())
        self._cache[step] = batch
        return batch


class EpochBatches:
    """Epochs of shuffled train images (seeded per epoch), augmented, the teacher run on each batch on `device`."""

    def __init__(
        self,
        teacher: nn.Module,
        split: Split,
        batch_size: int,
        seed: int = 0,
        crop_pad: int = 0,
        flip: bool = False,
        device: torch.device | None = None,
    ) -> None:
        self.teacher, self.split = teacher, split
        self.batch_size, self.seed, self.crop_pad, self.flip = int(batch_size), int(seed), int(crop_pad), bool(flip)
        self.device = device or torch.device("cpu")
        self.steps_per_epoch = max(1, math.ceil(len(split) / self.batch_size))
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    @torch.no_grad()
    def __call__(self, step: int) -> Batch:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = torch.randperm(len(self.split), generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))
        idx = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        gen = torch.Generator().manual_seed(mix_seed(self.seed, 0x4155, step))
        x = random_crop_flip(self.split.x[idx], self.crop_pad, self.flip, gen).to(self.device)
        self.teacher.eval()
        return x, self.split.y[idx].to(self.device), self.teacher(x).detach()


@dataclass
class DistillState:
    """Where a distillation stands: its optimizer (momentum buffers) and the next step; continuable."""

    optimizer: torch.optim.Optimizer
    step: int = 0
    losses: list[float] = field(default_factory=list)


def make_optimizer(model: nn.Module, cfg: KDConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, no weight decay on biases and BN parameters (as `train` does)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
    )


def distill(
    student: nn.Module,
    batches: Callable[[int], Batch],
    steps: int,
    cfg: KDConfig,
    *,
    state: DistillState | None = None,
    lr_at: Callable[[int], float] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> DistillState:
    """Train `student` on `batches(step)` for the steps from `state.step` (0 when new) up to `steps`.

    The learning rate is `lr_at(step)`, or constant `cfg.lr`. Each step seeds torch's generator
    from (seed, step) inside `fork_rng`, so dropout repeats exactly and the caller's random state is
    untouched. Returns the state to continue from; the student is left in eval mode.
    """
    state = state or DistillState(make_optimizer(student, cfg))
    student.train()
    bar = tqdm(total=steps - state.step, desc="distill", disable=not progress, unit="step", dynamic_ncols=True)
    with torch.random.fork_rng(devices=[]):
        for step in range(state.step, steps):
            torch.manual_seed(mix_seed(seed, 0x5354, step))
            x, y, teacher = batches(step)
            lr = cfg.lr if lr_at is None else lr_at(step)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
            loss = kd_loss(student(x), teacher, y, cfg.temperature, cfg.alpha)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            state.losses.append(float(loss.item()))
            state.step = step + 1
            bar.update(1)
    bar.close()
    student.eval()
    return state


def cosine(lr: float, total: int) -> Callable[[int], float]:
    """Cosine decay from `lr` to 0 over `total` steps, no warm-up (a fine-tune starts from trained weights)."""
    return lambda step: 0.5 * lr * (1.0 + math.cos(math.pi * step / max(1, total)))


def finetune_kd(
    student: nn.Module,
    teacher: nn.Module,
    data: DatasetBundle,
    epochs: float = 1.0,
    steps: int | None = None,
    lr: float = 0.01,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    cfg: KDConfig | None = None,
    val: bool = True,
) -> TrainResult:
    """Fine-tune a pruned `student` with distillation from `teacher` (the dense model) on the train
    split: cosine schedule from `lr`, the data set's augmentation, on a GPU when present
    (`pick_device`). Both models stay on that device; the caller moves them back. `val=False`
    skips the val accuracy at the end (NaN in the result)."""
    cfg = cfg or KDConfig(lr=lr, batch_size=128)
    dev = pick_device(device)
    student.to(dev)
    teacher.to(dev)
    aug = augmentation_for(data)
    batches = EpochBatches(teacher, data.train, cfg.batch_size, seed, int(aug["crop_pad"]), bool(aug["flip"]), dev)
    total = int(steps) if steps is not None else max(1, int(round(epochs * batches.steps_per_epoch)))
    t0 = time.perf_counter()
    state = distill(student, batches, total, cfg, lr_at=cosine(lr, total), seed=seed, progress=progress)
    val_acc = evaluate(student, data.val, device=dev) if val else float("nan")
    tail = state.losses[-50:]
    return TrainResult(
        val_accuracy=val_acc,
        train_loss=float(sum(tail) / max(1, len(tail))),
        wall_s=time.perf_counter() - t0,
        steps=state.step,
        history=[{"step": state.step, "loss": tail[-1] if tail else float("nan"), "val_accuracy": val_acc}],
    )


__all__ = [
    "Batch",
    "DistillState",
    "EpochBatches",
    "KDConfig",
    "SharedBatches",
    "cosine",
    "distill",
    "finetune_kd",
    "kd_loss",
    "make_optimizer",
    "mix_seed",
]
