"""The peer a user would pick instead of a search: Torch-Pruning's own global pruner, held to a live budget.

`tp.pruner.BasePruner` (`MetaPruner` is its deprecated alias in torch-pruning 1.6) with
`global_pruning=True`, L2 magnitude importance (torch-pruning's default group normalisation),
`round_to` 8, at most 0.9 of any layer's channels (the search agents' `max_ratio`) and the
classifier left whole. Its one knob is the global pruning ratio, and its answer is not monotone in
that ratio (see `candidates`), so every distinct architecture it makes on a 0.01 grid is ordered by
MACs and bisected to the one with the most MACs whose ONNX export meets the budget live on the
device: timed paired with the dense model and put in the job's frame, the way `hilprune export`
judges an agent's pick. That model is then BN-recalibrated and fine-tuned exactly as `hilprune
export` fine-tunes an agent's pick (same epochs, batch, schedule, teacher and seed), so the two are
compared at equal fine-tuning steps.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

MAX_RATIO = 0.9
GRID_POINTS = 90  # ratios 0, 0.01, ..., 0.9 (about 5 s of pruning for resnet20)
FALLBACK = 4  # more low-MACs architectures measured when the fewest-MACs one misses the budget


@dataclasses.dataclass
class PeerResult:
    """What the global pruner reached for one budget: its ratio, live latency, accuracies, cost."""

    ratio: float
    latency_ms: float
    meets_budget: bool
    macs: int
    val_accuracy: float  # BN-recalibrated, before fine-tuning (the agents' search-time signal)
    test_accuracy_before_finetune: float
    test_accuracy: float  # after the fine-tune
    finetune_steps: int
    tried: list[tuple[float, float]]  # (ratio, live ms) of every bisection step
    architectures: int  # distinct architectures on the ratio grid
    search_wall_s: float
    finetune_wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def prune_global(dense: Any, input_shape: tuple[int, int, int], ratio: float, round_to: int = 8) -> Any:
    """A copy of `dense` with `ratio` of its prunable channels removed by global magnitude ranking."""
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(dense).eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    pruner = tp.pruner.BasePruner(
        model,
        torch.randn(1, *input_shape),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=True,
        pruning_ratio=ratio,
        max_pruning_ratio=MAX_RATIO,
        ignored_layers=linears[-1:],  # the classifier keeps its classes
        round_to=round_to,
    )
    pruner.step()
    return model


def candidates(dense: Any, input_shape: tuple[int, int, int], round_to: int = 8) -> list[tuple[float, int]]:
    """(ratio, MACs) of each distinct architecture the pruner makes on a 0.01 grid of ratios, most
    MACs first. torch-pruning's answer is not monotone in the ratio (with `round_to` a group loses
    more than its share, and a group whose channels would all go is left whole), so the ratio itself
    cannot be bisected; the architectures it produces, ordered by MACs, can."""
    import torch

    from hilprune.surgery.counting import macs_and_params

    seen: dict[tuple[int, ...], tuple[float, int]] = {}
    for i in range(GRID_POINTS + 1):
        ratio = round(MAX_RATIO * i / GRID_POINTS, 4)
        model = prune_global(dense, input_shape, ratio, round_to)
        key = tuple(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        if key not in seen:
            seen[key] = (ratio, int(macs_and_params(model, torch.randn(1, *input_shape))[0]))
    return sorted(seen.values(), key=lambda c: -c[1])


def bisect_budget(
    cands: list[tuple[float, int]], latency_at: Callable[[float], float], budget_ms: float
) -> tuple[float, list[tuple[float, float]]]:
    """The candidate with the most MACs whose live latency meets the budget, by bisection over
    `cands` (most MACs first; latency assumed to fall with MACs). When the one with the fewest MACs
    misses, the next `FALLBACK` fewest are measured too (latency is not monotone in MACs) and the
    first that meets it, else the fastest, is returned. Returns its ratio and every (ratio, ms) measured."""
    from hilprune.budget import within_budget

    tried: list[tuple[float, float]] = []

    def meets(i: int) -> bool:
        ms = latency_at(cands[i][0])
        tried.append((cands[i][0], ms))
        return within_budget(ms, budget_ms)

    lo, hi = 0, len(cands) - 1
    if not meets(hi):
        for i in range(hi - 1, max(hi - 1 - FALLBACK, -1), -1):
            if meets(i):
                return cands[i][0], tried
        return min(tried, key=lambda t: t[1])[0], tried
    while lo < hi:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid + 1
    return cands[lo][0], tried


def run_peer(
    dense: Any,
    data: Any,
    input_shape: tuple[int, int, int],
    dataset: str,
    live_in_frame: Callable[[bytes], float],
    budget_ms: float,
    *,
    finetune_epochs: float,
    seed: int,
    bn_batches: int = 10,
    lr: float = 0.01,
    round_to: int = 8,
) -> PeerResult:
    """Find the global ratio whose export meets the budget live, then recalibrate BN and fine-tune as export does."""
    import torch

    from hilprune.budget import within_budget
    from hilprune.export import to_onnx_bytes
    from hilprune.surgery.counting import macs_and_params
    from hilprune.train import evaluate, recalibrate_bn
    from hilprune.train.bn_recalib import BN_BATCH_SIZE
    from search.export import finetune_distilled

    t0 = time.perf_counter()
    measured: dict[float, float] = {}

    def latency_at(ratio: float) -> float:
        if ratio not in measured:
            measured[ratio] = live_in_frame(to_onnx_bytes(prune_global(dense, input_shape, ratio, round_to), input_shape))
        return measured[ratio]

    cands = candidates(dense, input_shape, round_to)
    ratio, tried = bisect_budget(cands, latency_at, budget_ms)
    model = prune_global(dense, input_shape, ratio, round_to)
    search_wall = time.perf_counter() - t0
    macs, _ = macs_and_params(model, torch.randn(1, *input_shape))
    recalibrate_bn(model, data.train, batches=bn_batches, batch_size=BN_BATCH_SIZE, seed=seed)
    val_before, test_before = evaluate(model, data.val), evaluate(model, data.test)
    t1 = time.perf_counter()
    steps = 0
    if finetune_epochs > 0:
        ft, _ = finetune_distilled(model, data, input_shape, dataset, finetune_epochs, lr, seed, False, teacher=dense)
        steps = int(ft.steps)
        model.cpu().eval()
    return PeerResult(
        ratio=ratio,
        latency_ms=measured[ratio],
        meets_budget=within_budget(measured[ratio], budget_ms),
        macs=int(macs),
        val_accuracy=val_before,
        test_accuracy_before_finetune=test_before,
        test_accuracy=evaluate(model, data.test),
        finetune_steps=steps,
        tried=tried,
        architectures=len(cands),
        search_wall_s=round(search_wall, 1),
        finetune_wall_s=round(time.perf_counter() - t1, 1),
    )
