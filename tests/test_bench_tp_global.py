"""The compare_agents peer: Torch-Pruning's global pruner held to a live budget (bench/tp_global.py).

The bisection is logic (a latency function stands in for the device); the pruner itself runs on
digits-cnn, where it must physically remove channels and give distinct architectures by MACs."""

from __future__ import annotations

import pytest

from bench.tp_global import MAX_RATIO, bisect_budget, candidates, prune_global

# (ratio, MACs), most MACs first, and a latency that falls with MACs
CANDS = [(0.0, 1000), (0.1, 800), (0.3, 600), (0.5, 400), (0.7, 200)]


def latency_of(ratio: float) -> float:
    return dict(CANDS)[ratio] / 1000.0


@pytest.mark.parametrize(
    ("budget_ms", "expected"),
    [(1.0, 0.0), (0.8, 0.1), (0.65, 0.3), (0.45, 0.5), (0.2, 0.7)],
)
def test_bisection_finds_the_candidate_with_most_macs_that_meets_the_budget(budget_ms: float, expected: float) -> None:
    ratio, tried = bisect_budget(CANDS, latency_of, budget_ms)
    assert ratio == expected
    assert len(tried) <= 1 + 3  # the smallest first, then log2(5) steps
    assert tried[0][0] == CANDS[-1][0]


def test_a_budget_below_the_fewest_macs_falls_back_to_the_fastest_measured() -> None:
    # latency not monotone in MACs: the fewest-MACs architecture runs slower than the next one
    lat = {0.0: 1.0, 0.1: 0.8, 0.3: 0.6, 0.5: 0.25, 0.7: 0.3}
    ratio, tried = bisect_budget(CANDS, lat.__getitem__, 0.26)
    assert ratio == 0.5 and [r for r, _ in tried] == [0.7, 0.5]
    ratio, tried = bisect_budget(CANDS, lat.__getitem__, 0.1)
    assert ratio == 0.5 and len(tried) == len(CANDS)  # none meets it: the fastest of those measured


def test_bisection_never_returns_an_untried_candidate() -> None:
    ratio, tried = bisect_budget(CANDS, latency_of, 0.45)
    assert ratio in {r for r, _ in tried}
    assert all(ms == latency_of(r) for r, ms in tried)


def test_global_pruner_removes_channels_and_candidates_are_distinct() -> None:
    import torch

    from hilprune.models import resolve_model

    spec = resolve_model("digits-cnn", "digits")
    dense = spec.build()
    dense_channels = [m.out_channels for m in dense.modules() if isinstance(m, torch.nn.Conv2d)]
    pruned = prune_global(dense, spec.input_shape, 0.5, round_to=1)
    channels = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(channels) < sum(dense_channels)
    assert all(c >= 1 for c in channels)
    assert pruned(torch.randn(2, *spec.input_shape)).shape == (2, spec.num_classes)
    cands = candidates(dense, spec.input_shape, round_to=1)
    macs = [m for _, m in cands]
    assert macs == sorted(macs, reverse=True) and len(cands) > 1
    assert cands[0][0] == 0.0 and all(0.0 <= r <= MAX_RATIO for r, _ in cands)
