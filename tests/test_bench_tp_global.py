"""The compare_agents peer: Torch-Pruning's global pruner held to a live budget (bench/tp_global.py).

The bisection is logic (a latency function stands in for the device); the pruner itself runs on
digits-cnn, where it must physically remove channels and give distinct architectures by MACs."""

from __future__ import annotations

from typing import Any

import pytest

from bench.tp_global import MAX_RATIO, bisect_budget, candidates, prune_global, prune_global_tracked, run_peer

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
    assert len(tried) <= 2 + 3  # the fewest MACs first, then the most, then log2(5) steps
    assert tried[0][0] == CANDS[-1][0]


def test_a_budget_below_the_fewest_macs_falls_back_to_the_fastest_measured() -> None:
    # latency not monotone in MACs: the fewest-MACs architecture runs slower than the next one
    lat = {0.0: 1.0, 0.1: 0.8, 0.3: 0.6, 0.5: 0.25, 0.7: 0.3}
    ratio, tried = bisect_budget(CANDS, lat.__getitem__, 0.26)
    assert ratio == 0.5 and [r for r, _ in tried] == [0.7, 0.5]
    ratio, tried = bisect_budget(CANDS, lat.__getitem__, 0.1)
    assert ratio == 0.5 and len(tried) == len(CANDS)  # none meets it: the fastest of those measured


def test_an_unpruned_architecture_that_meets_the_budget_wins_though_light_pruning_misses() -> None:
    # an INT8 graph: the unpruned one is fast, lightly pruned ones (odd widths for its kernels) slower
    lat = {0.0: 0.5, 0.1: 0.7, 0.3: 0.65, 0.5: 0.4, 0.7: 0.3}
    ratio, tried = bisect_budget(CANDS, lat.__getitem__, 0.55)
    assert ratio == 0.0 and [r for r, _ in tried] == [0.7, 0.0]


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


def test_tracked_pruning_names_every_removed_output_channel_in_dense_indexing() -> None:
    import torch

    from hilprune.models import resolve_model

    spec = resolve_model("digits-cnn", "digits")
    dense = spec.build()
    pruned, removed = prune_global_tracked(dense, spec.input_shape, 0.5, round_to=1)
    dense_convs = {n: m for n, m in dense.named_modules() if isinstance(m, torch.nn.Conv2d)}
    lost = {n: dense_convs[n].out_channels - p.out_channels for n, p in pruned.named_modules() if n in dense_convs}
    for name, conv in dense_convs.items():
        idxs = removed.get(name, set())
        assert len(idxs) == lost[name]
        assert all(0 <= i < conv.out_channels for i in idxs)
    assert sum(lost.values()) > 0


def test_the_int8_peer_is_refitted_fine_tuned_and_shipped_as_the_export_ships_a_pick() -> None:
    """The device's latency is stood in by the graph's size (the bisection is logic); the
    quantization runs onnxruntime for real, as `hilprune export --precision int8` does."""
    from hilprune.data import load_dataset
    from hilprune.models import resolve_model

    spec = resolve_model("digits-cnn", "digits")
    dense = spec.build()
    data = load_dataset("digits")
    sizes: list[int] = []
    schemes: list[str | None] = []

    def size_in_frame(onnx_bytes: bytes, scheme: str | None) -> float:
        sizes.append(len(onnx_bytes))
        schemes.append(scheme)
        return len(onnx_bytes) / 1e6

    from hwprofiler.quantization import Scheme, quantize_structure

    dense_int8 = quantize_structure(_onnx(dense, spec.input_shape), Scheme.parse("qdq-u8s8"))
    budget = 0.6 * len(dense_int8) / 1e6  # the INT8 graphs are what the peer is judged by
    res = run_peer(
        dense,
        data,
        spec.input_shape,
        "digits",
        size_in_frame,
        budget,
        finetune_epochs=0.2,
        seed=0,
        round_to=1,
        refit_images=32,
        int8_scheme="qdq-u8s8",
        device="ort-cpu-1t",
    )
    assert res.refitted > 0
    assert res.ratio > 0 and res.macs > 0
    assert res.shipped in ("int8", "fp32")
    assert 0.0 <= res.test_accuracy <= 1.0 and res.finetune_steps > 0
    if res.shipped == "int8":
        assert res.scheme is not None and res.fp32_test_accuracy is not None
    assert res.latency_ms == sizes[-1] / 1e6  # judged by the shipped graph, measured last
    assert set(schemes[:-1]) == {"qdq-u8s8"} and schemes[-1] == res.scheme  # INT8 graphs timed as INT8 (the bridge)


def _onnx(model: object, input_shape: tuple[int, int, int]) -> bytes:
    from hilprune.export import to_onnx_bytes

    return to_onnx_bytes(model, input_shape)


def test_an_int8_peer_without_a_device_is_refused_before_any_work() -> None:
    def never_measured(onnx_bytes: bytes, scheme: str | None) -> float:
        raise AssertionError("nothing may be measured")

    with pytest.raises(ValueError, match="needs the device"):
        run_peer(None, None, (1, 8, 8), "digits", never_measured, 1.0, finetune_epochs=0.0, seed=0, int8_scheme="qdq-u8s8")


def test_a_peer_reusing_an_earlier_bisection_measures_nothing_and_chooses_its_ridge_by_probe() -> None:
    """compare_agents reruns the peer with another `--ridge` on the bisection it already measured;
    with `ridge=None` the refit's ridge is chosen as `hilprune export --ridge auto` chooses it."""
    from hilprune.data import load_dataset
    from hilprune.models import resolve_model
    from search.ridge import RIDGES

    spec = resolve_model("digits-cnn", "digits")
    dense = spec.build()
    data = load_dataset("digits")

    def never_measured(onnx_bytes: bytes, scheme: str | None) -> float:
        raise AssertionError("the earlier bisection's latency must be reused")

    tried = [[0.7, 0.2], [0.3, 0.45]]  # as read back from JSON

    def peer(ridge: float | None) -> Any:
        return run_peer(
            dense, data, spec.input_shape, "digits", never_measured, 0.5,
            finetune_epochs=0.1, seed=0, round_to=1, refit_images=32, bisected=(0.3, tried, 7), ridge=ridge,
        )  # fmt: skip

    res = peer(None)
    assert res.ratio == 0.3 and res.latency_ms == 0.45 and res.meets_budget
    assert res.tried == [(0.7, 0.2), (0.3, 0.45)] and res.architectures == 7
    assert res.refitted > 0 and res.ridge in RIDGES
    assert res.ridge_probe is not None and set(res.ridge_probe["scores"]) == {f"{r:g}" for r in RIDGES}
    assert res.ridge_probe["ridge"] == res.ridge
    fixed = peer(0.01)
    assert fixed.ridge == 0.01 and fixed.ridge_probe is None


def test_compare_agents_keys_exports_by_ridge_so_earlier_ones_are_not_reused_for_another() -> None:
    from bench.compare_agents import ridge_tag

    # exports cached before --ridge refitted with the job's own ridge: they are kept for it alone
    assert ridge_tag("0.1", 0.1) == ""
    assert ridge_tag("0.001", 0.001) == ""
    assert ridge_tag("0.1", 0.001) == "~ridge=0.1"
    assert ridge_tag("auto", 0.1) == "~ridge=auto"
    assert ridge_tag("auto", None) == "~ridge=auto"
    assert ridge_tag("0.001", 0.1) == "~ridge=0.001"
    from hilprune.errors import HilpruneError

    with pytest.raises(HilpruneError, match="--ridge"):
        ridge_tag("-1", 0.1)
