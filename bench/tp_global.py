"""The peer a user would pick instead of a search: Torch-Pruning's own global pruner, held to a live budget.

`tp.pruner.BasePruner` (`MetaPruner` is its deprecated alias in torch-pruning 1.6) with
`global_pruning=True`, L2 magnitude importance (torch-pruning's default group normalisation),
`round_to` 8, at most 0.9 of any layer's channels (the search agents' `max_ratio`) and the
classifier left whole. Its one knob is the global pruning ratio, and its answer is not monotone in
that ratio (see `candidates`), so every distinct architecture it makes on a 0.01 grid is ordered by
MACs and bisected to the one with the most MACs whose ONNX export meets the budget live on the
device: timed paired with the dense model and put in the job's frame, the way `hilprune export`
judges an agent's pick. That model is then refitted by least squares (the layers that lost input
channels, on the same train images `hilprune export` uses, the ridge chosen by the same short
distillation probe unless one is given), BN-recalibrated and fine-tuned exactly as `hilprune export`
fine-tunes an agent's pick (same epochs, batch, schedule, teacher and seed), so the two are compared
at equal fine-tuning steps.

With `int8_scheme` (a search run with `--precision int8`), every architecture is judged by its INT8
graph in that scheme (the one the agents' searches priced), and the fine-tuned model is quantized as
`hilprune export --precision int8` quantizes an agent's pick (`hilprune.quantize`: each scheme timed
on the device, the fastest that keeps validation accuracy shipped); its latency and test accuracy are
those of the shipped graph.
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
    test_accuracy: float  # after the fine-tune (of the shipped graph: INT8 when it was quantized)
    finetune_steps: int
    tried: list[tuple[float, float]]  # (ratio, live ms) of every bisection step
    architectures: int  # distinct architectures on the ratio grid
    search_wall_s: float
    finetune_wall_s: float
    refitted: int = 0  # layers refitted by least squares before BN recalibration
    shipped: str = "fp32"  # or "int8"
    scheme: str | None = None  # the INT8 scheme shipped
    fp32_test_accuracy: float | None = None  # the fine-tuned model before quantization
    ridge: float | None = None  # the refit's ridge (None: no refit)
    ridge_probe: dict[str, Any] | None = None  # search.ridge.RidgeChoice.to_dict() when a probe chose it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def prune_global(dense: Any, input_shape: tuple[int, int, int], ratio: float, round_to: int = 8) -> Any:
    """A copy of `dense` with `ratio` of its prunable channels removed by global magnitude ranking."""
    return prune_global_tracked(dense, input_shape, ratio, round_to)[0]


def prune_global_tracked(
    dense: Any, input_shape: tuple[int, int, int], ratio: float, round_to: int = 8
) -> tuple[Any, dict[str, set[int]]]:
    """`prune_global`, and per layer name the output channels it removed (dense indexing: with
    global pruning each group is pruned once, in one step), which least-squares refitting needs."""
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(dense).eval()
    names = {id(m): n for n, m in model.named_modules()}
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
    removed: dict[str, set[int]] = {}
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            if dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels):
                removed.setdefault(names[id(dep.target.module)], set()).update(int(i) for i in idxs)
        group.prune()
    return model, removed


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
    first that meets it, else the fastest, is returned. When it meets, the one with the most MACs
    (the unpruned architecture) is tried before bisecting: an INT8 graph can meet a budget unpruned
    while lightly pruned ones miss it. Returns its ratio and every (ratio, ms) measured."""
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
    if hi > 0 and meets(0):
        return cands[0][0], tried
    lo = min(1, hi)
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
    live_in_frame: Callable[[bytes, str | None], float],
    budget_ms: float,
    *,
    finetune_epochs: float,
    seed: int,
    bn_batches: int = 10,
    lr: float = 0.01,
    round_to: int = 8,
    refit_images: int = 0,
    int8_scheme: str | None = None,
    device: str | None = None,
    ridge: float | None = None,
    bisected: tuple[float, list[Any], int] | None = None,
) -> PeerResult:
    """Find the global ratio whose export meets the budget live, then refit, recalibrate BN and
    fine-tune (and quantize, with `int8_scheme`, for `device`) as export does.

    `ridge`: the refit's; None chooses it as `hilprune export --ridge auto` does (a short
    distillation probe per candidate when there is a fine-tune, else the default). `bisected`:
    (ratio, tried, architectures) of an earlier run on the same dense model, device and budget;
    the pruner is deterministic, so its answer is reused rather than measured again."""
    import torch

    from hilprune.budget import within_budget
    from hilprune.export import to_onnx_bytes
    from hilprune.surgery.counting import macs_and_params
    from hilprune.surgery.reconstruct import reconstruct
    from hilprune.train import evaluate, recalibrate_bn
    from hilprune.train.bn_recalib import BN_BATCH_SIZE
    from search.export import finetune_distilled
    from search.ridge import settle_ridge

    if int8_scheme is not None and device is None:
        raise ValueError("run_peer: int8_scheme needs the device whose export chooses the shipped scheme")
    t0 = time.perf_counter()
    measured: dict[float, float] = {}

    def graph(model: Any) -> bytes:
        onnx_bytes = to_onnx_bytes(model, input_shape)
        if int8_scheme is None:
            return onnx_bytes
        from hwprofiler.quantization import Scheme, quantize_structure

        return quantize_structure(onnx_bytes, Scheme.parse(int8_scheme))  # as the searches priced INT8 graphs

    def latency_at(ratio: float) -> float:
        if ratio not in measured:
            measured[ratio] = live_in_frame(graph(prune_global(dense, input_shape, ratio, round_to)), int8_scheme)
        return measured[ratio]

    if bisected is None:
        cands = candidates(dense, input_shape, round_to)
        ratio, tried = bisect_budget(cands, latency_at, budget_ms)
        architectures = len(cands)
    else:
        ratio, tried, architectures = bisected[0], [tuple(t) for t in bisected[1]], bisected[2]
        measured[ratio] = dict(tried).get(ratio) or latency_at(ratio)
    pruned, removed = prune_global_tracked(dense, input_shape, ratio, round_to)
    search_wall = time.perf_counter() - t0
    macs, _ = macs_and_params(pruned, torch.randn(1, *input_shape))
    refitted: list[str] = []

    def prepared(r: float | None) -> Any:
        """The pruned model refitted with ridge `r` (when it refits) and BN-recalibrated."""
        nonlocal refitted
        model = copy.deepcopy(pruned)
        if refit_images and r is not None:
            refitted = reconstruct(model, dense, data.train.x[:refit_images], removed, ridge=r, seed=seed)
        recalibrate_bn(model, data.train, batches=bn_batches, batch_size=BN_BATCH_SIZE, seed=seed)
        return model

    ridge, choice = settle_ridge(  # as search.export settles it
        prepared,
        dense,
        data,
        ridge=ridge,
        refits=bool(refit_images) and any(removed.values()),
        finetune_epochs=finetune_epochs,
        lr=lr,
        seed=seed,
    )
    model = prepared(ridge)
    val_before, test_before = evaluate(model, data.val), evaluate(model, data.test)
    t1 = time.perf_counter()
    steps = 0
    if finetune_epochs > 0:
        ft, _ = finetune_distilled(model, data, input_shape, dataset, finetune_epochs, lr, seed, False, teacher=dense)
        steps = int(ft.steps)
        model.cpu().eval()
    latency_ms, test_after = measured[ratio], evaluate(model, data.test)
    shipped, scheme, fp32_test = "fp32", None, None
    if int8_scheme is not None:
        from hilprune.quantize import quantize_for_device

        outcome = quantize_for_device(to_onnx_bytes(model, input_shape), data, device)
        if outcome.int8_bytes is not None:
            shipped, scheme, fp32_test = "int8", outcome.scheme.name if outcome.scheme else None, test_after
            test_after = float(outcome.int8_test_accuracy if outcome.int8_test_accuracy is not None else test_after)
        latency_ms = live_in_frame(outcome.shipped, scheme)  # the shipped graph, with its real scales
    return PeerResult(
        ratio=ratio,
        latency_ms=latency_ms,
        meets_budget=within_budget(latency_ms, budget_ms),
        macs=int(macs),
        val_accuracy=val_before,
        test_accuracy_before_finetune=test_before,
        test_accuracy=test_after,
        finetune_steps=steps,
        tried=tried,
        architectures=architectures,
        search_wall_s=round(search_wall, 1),
        finetune_wall_s=round(time.perf_counter() - t1, 1),
        refitted=len(refitted),
        shipped=shipped,
        scheme=scheme,
        fp32_test_accuracy=fp32_test,
        ridge=ridge,
        ridge_probe=choice.to_dict() if choice else None,
    )
