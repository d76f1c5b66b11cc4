"""The least-squares refit's ridge for one export, chosen by a short distillation probe.

No single ridge suits every pruned model. At 0.1 (hilprune.surgery.reconstruct.DEFAULT_RIDGE) the
refit keeps weights near the dense model's norm, and a fine-tune from it ended highest on resnet56
and mobilenetv2 at width-only policies (bench/ls_ridge.py). On resnet20 with 3 residual blocks
removed, the same pick exported with 0.25 epoch of distillation scored 88.4% test from ridge 0.001,
87.8% from 0.01, 85.3% from 0.1 and 85.6% with no refit at all (docs/benchmarks.md, "export_ridge").
The accuracy right after the refit does not tell them apart (on resnet56 and mobilenetv2 it put
0.001 or 0.01 at or above 0.1, and 40 distillation steps then left 0.001 far the worst), so each
candidate ridge is refitted, BN-recalibrated and distilled for a few steps, and the one with the
best validation accuracy is kept for the real fine-tune.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hilprune.errors import HilpruneError

RIDGES = (0.001, 0.01, 0.1)  # the range bench/ls_ridge.py found useful: 1 underfits everywhere
PROBE_STEPS = 40  # distillation steps per candidate, cosine from the export's lr: bench/ls_ridge.py's probe
PROBE_BATCH = 64  # images per step, as in bench/ls_ridge.py and the search's kd rungs
PROBE_VAL = 2000  # validation images each candidate is scored on


@dataclass
class RidgeChoice:
    """The ridge kept and what each candidate scored after the probe (val accuracy in [0, 1])."""

    ridge: float
    scores: dict[float, float] = field(default_factory=dict)
    steps: int = PROBE_STEPS
    val_images: int = PROBE_VAL
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ridge": self.ridge,
            "scores": {f"{r:g}": round(a, 4) for r, a in self.scores.items()},
            "steps": self.steps,
            "val_images": self.val_images,
            "wall_s": round(self.wall_s, 2),
        }


def parse_ridge(text: str | float | None) -> float | None:
    """``auto`` (or None): chosen by the probe; otherwise a ridge > 0 (HilpruneError: one line)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise HilpruneError(f"--ridge must be 'auto' or a number > 0, got {text!r}") from None
    if not value > 0:
        raise HilpruneError(f"--ridge must be 'auto' or a number > 0, got {text!r}")
    return value


def choose_ridge(
    refitted: Callable[[float], Any],
    teacher: Any,
    data: Any,
    *,
    lr: float,
    seed: int,
    ridges: Sequence[float] = RIDGES,
    steps: int = PROBE_STEPS,
    val_images: int = PROBE_VAL,
    prefer: float | None = None,
) -> RidgeChoice:
    """Score each ridge: `refitted(ridge)` returns a fresh pruned model refitted with it and BN
    recalibrated; it is distilled from `teacher` for `steps` steps (seeded, so every candidate sees
    the same batches) and scored on the first `val_images` of the validation split. Ties go to
    `prefer` (the default ridge), then to the larger ridge."""
    from hilprune.train import KDConfig, evaluate, finetune_kd

    if not ridges:
        raise ValueError("choose_ridge needs at least one ridge")
    t0 = time.perf_counter()
    val = data.val.subset(val_images)
    scores: dict[float, float] = {}
    for ridge in ridges:
        model = refitted(ridge)
        try:
            cfg = KDConfig(lr=lr, batch_size=PROBE_BATCH)
            finetune_kd(model, teacher, data, steps=steps, lr=lr, seed=seed, progress=False, cfg=cfg, val=False)
        finally:
            model.cpu()
            teacher.cpu().eval()
        scores[ridge] = evaluate(model, val)
    best = max(scores, key=lambda r: (scores[r], r == prefer, r))
    return RidgeChoice(best, scores, steps, len(val), time.perf_counter() - t0)


def probes(refits: bool, ridge: float | None, finetune_epochs: float) -> bool:
    """Whether an export's ridge is chosen by the probe: it refits, no ridge was given, and a
    fine-tune follows (the probe ranks ridges by what a short fine-tune makes of them)."""
    return refits and ridge is None and finetune_epochs > 0


def settle_ridge(
    refitted: Callable[[float], Any],
    teacher: Any,
    data: Any,
    *,
    ridge: float | None,
    refits: bool,
    finetune_epochs: float,
    lr: float,
    seed: int,
) -> tuple[float | None, RidgeChoice | None]:
    """The ridge an export refits with, as `hilprune export --ridge` settles it (and the probe's
    choice when it ran): the given one, else the probe's (`probes`), else DEFAULT_RIDGE; None
    when nothing is refitted. `bench/tp_global.py` settles its peer's ridge the same way."""
    from hilprune.surgery.reconstruct import DEFAULT_RIDGE

    choice = None
    if probes(refits, ridge, finetune_epochs):
        choice = choose_ridge(refitted, teacher, data, lr=lr, seed=seed, prefer=DEFAULT_RIDGE)
        ridge = choice.ridge
    return ((ridge or DEFAULT_RIDGE) if refits else None), choice


__all__ = [
    "PROBE_BATCH",
    "PROBE_STEPS",
    "PROBE_VAL",
    "RIDGES",
    "RidgeChoice",
    "choose_ridge",
    "parse_ridge",
    "probes",
    "settle_ridge",
]
