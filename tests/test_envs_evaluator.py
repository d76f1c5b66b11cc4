"""envs.evaluator.PolicyEvaluator on digits-cnn / digits / sim-cpu (and a user model file).

Logic is tested on the simulated device: its latencies are the same on every machine, so budgets
are exact fractions and results repeat exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from envs.errors import BudgetError, EnvConfigError
from envs.evaluator import EvalResult, PolicyEvaluator
from hilprune.budget import Budget, lowest_budget
from hilprune.errors import HilpruneError, PolicyError

USER_MODEL = str(Path(__file__).parent / "fixtures_envs" / "user_cnn.py") + ":build"


@pytest.fixture(scope="module")
def ev() -> PolicyEvaluator:
    return PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=200, proxy="bn")


def test_dense_reference(ev: PolicyEvaluator) -> None:
    assert torch.get_num_threads() == 1
    assert [g.name for g in ev.groups] == ["features.0", "features.3", "features.7", "features.10"]
    assert ev.dense_accuracy > 0.9  # the shipped checkpoint
    assert ev.dense_latency_ms > 0 and ev.dense_lut_latency_ms > 0
    assert ev.dense_macs > 0
    assert ev.fingerprint["fingerprint_id"] == ev.fingerprint_id
    assert ev.kmap_ok
    assert ev.val_size == 200
    shares = ev.group_latency_shares()
    assert len(shares) == 4 and all(s > 0 for s in shares) and sum(shares) <= 1 + 1e-9


def test_val_subset_comes_from_the_val_split(ev: PolicyEvaluator) -> None:
    from hilprune.data import load_dataset

    bundle = load_dataset("digits")
    assert torch.equal(ev.val.x, bundle.val.x[:200])
    assert not any(torch.equal(ev.val.x[:5], bundle.test.x[i : i + 5]) for i in range(0, len(bundle.test) - 5, 5))


def test_budgets_resolve_against_the_dense_reference(ev: PolicyEvaluator, caplog) -> None:
    d = ev.dense_latency_ms
    assert ev.resolve_budget(0.5) == Budget("0.5", 0.5 * d, 0.5)
    assert ev.resolve_budget("0.5") == ev.resolve_budget("50%") == ev.resolve_budget(np.float64(0.5))
    assert ev.resolve_budget("1.2ms") == Budget("1.2ms", 1.2, None)
    for bad in (1.5, 0, "fast", True, "-1ms"):
        with pytest.raises(BudgetError):
            ev.resolve_budget(bad)
    with pytest.raises(BudgetError) as exc:
        ev.check_budget(0.01)
    assert isinstance(exc.value, HilpruneError) and "--max-ratio" in str(exc.value)
    assert ev.check_budget(0.5).ms == pytest.approx(0.5 * d)
    with caplog.at_level("WARNING"):
        assert ev.check_budget(f"{2 * d}ms").ms == pytest.approx(2 * d, rel=1e-5)  # above dense: accepted, warned
    assert "already meets it" in caplog.text


def test_evaluate_phases_and_cache(ev: PolicyEvaluator) -> None:
    ratios = [0.3, 0.5, 0.2, 0.6]
    n0 = ev.n_evaluations
    r1 = ev.evaluate(ratios)
    assert isinstance(r1, EvalResult) and not r1.cached
    assert {"surgery", "bn", "eval", "latency"} <= set(r1.phases)
    assert 0.0 <= r1.accuracy <= 1.0
    assert (
        r1.latency_ms == pytest.approx(r1.lut_latency_ms * ev.lut_scale)
        and r1.live_latency_ms is None
        and r1.latency_kind == "lut"
    )
    assert 0 < r1.macs < ev.dense_macs
    assert r1.policy.metrics["accuracy"] == r1.accuracy
    # Same rounded policy (other requested ratios, same kept channels): a cache hit, not a new evaluation.
    r2 = ev.evaluate({g.name: r + 0.001 for g, r in zip(ev.groups, ratios)})
    assert r2.cached and r2.key() == r1.key()
    assert (r2.accuracy, r2.latency_ms, r2.macs) == (r1.accuracy, r1.latency_ms, r1.macs)
    assert ev.n_evaluations == n0 + 1
    # The evaluation is deterministic: a fresh result for the same policy gives the same accuracy.
    ev._cache.clear()
    assert ev.evaluate(ratios).accuracy == r1.accuracy


def test_predict_latency_matches_real_export(ev: PolicyEvaluator) -> None:
    import hwprofiler
    from hilprune.export import to_onnx_bytes

    rng = np.random.default_rng(3)
    for _ in range(3):
        ratios = list(rng.uniform(0, 0.9, ev.n_groups))
        fast = ev.predict_latency(ratios)
        model = ev.surgeon.apply(ev.policy(ratios), count=False).model
        real = ev.predictor.predict(hwprofiler.kernels_from_onnx(to_onnx_bytes(model, ev.input_shape)))
        assert fast == pytest.approx(real * ev.lut_scale)  # in the dense reference's frame
    assert ev.predict_latency([0.0] * 4) == pytest.approx(ev.dense_latency_ms)
    assert ev.min_latency_ms() == pytest.approx(ev.predict_latency([0.9] * 4))
    with pytest.raises(PolicyError):
        ev.predict_latency([0.95] * 4)
    with pytest.raises(PolicyError):
        ev.predict_latency([0.1] * 3)


def test_lut_prices_are_judged_in_the_dense_references_frame() -> None:
    """A job's dense reference measured in a slow phase of the machine (here: recorded 1.25x slower
    than this process measured it) must not loosen what a fractional budget admits: LUT predictions,
    the floor and every LUT-judged result move with the reference in milliseconds and keep their
    ratios to it, as paired live ratios do."""
    ev = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=100, proxy="bn")
    ratios = [0.3, 0.5, 0.2, 0.6]
    raw = ev.latency.predict_key(ev.kept(ratios))
    floor_fraction = ev.min_latency_ms() / ev.dense_latency_ms
    speedup = ev.dense_latency_ms / ev.predict_latency(ratios)
    assert ev.predict_latency([0.0] * 4) == pytest.approx(ev.dense_latency_ms)

    ev.use_reference(1.25 * ev.dense_latency_ms)
    assert ev.lut_scale == pytest.approx(ev.dense_latency_ms / ev.dense_lut_latency_ms)
    assert ev.predict_latency(ratios) == pytest.approx(raw * ev.lut_scale)
    assert ev.dense_latency_ms / ev.predict_latency(ratios) == pytest.approx(speedup)  # the ratio does not move
    assert ev.min_latency_ms() / ev.dense_latency_ms == pytest.approx(floor_fraction)
    r = ev.evaluate(ratios)
    assert r.latency_kind == "lut" and r.lut_latency_ms == pytest.approx(raw)
    assert r.latency_ms == pytest.approx(raw * ev.lut_scale) and ev.dense_latency_for(r) == ev.dense_latency_ms
    # The floor as a fraction still binds: a budget just under it is refused, just over it accepted.
    with pytest.raises(BudgetError) as exc:
        ev.check_budget(floor_fraction * 0.99)
    # The error carries the floor, and the label it offers (rounded up) is one that can be met.
    assert exc.value.floor == pytest.approx(floor_fraction)
    offered = lowest_budget(exc.value.floor)
    assert f"at least {offered} of the dense latency" in str(exc.value)
    assert float(offered) >= floor_fraction and ev.check_budget(offered).label == offered
    assert ev.check_budget(floor_fraction * 1.01).fraction == pytest.approx(floor_fraction * 1.01, rel=1e-4)


def test_bad_options() -> None:
    with pytest.raises(EnvConfigError):
        PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", latency_source="magic")
    with pytest.raises(HilpruneError):
        PolicyEvaluator("no-such-model", dataset="digits")


def test_live_and_hybrid_sources() -> None:
    live = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", latency_source="live", val_size=100, proxy="bn")
    r = live.evaluate([0.5] * 4)
    assert r.live_latency_ms is not None and r.latency_kind == "live" and r.live_ratio is not None
    # paired with the dense model, in the dense reference's frame
    assert r.latency_ms == pytest.approx(r.live_ratio * live.dense_latency_ms)
    assert r.live_latency_ms == pytest.approx(r.latency_ms)  # the simulated device has no drift: the frames agree
    assert r.lut_latency_ms > 0 and "export" in r.phases and live.eval_backend == "ort"  # exports anyway: onnxruntime
    live.use_reference(2 * live.dense_latency_ms)  # a job's recorded reference: the frame follows it
    again = live.evaluate([0.55] * 4)
    assert again.latency_ms == pytest.approx(again.live_ratio * live.dense_latency_ms)

    hyb = PolicyEvaluator(
        "digits-cnn", dataset="digits", device="sim-cpu", latency_source="hybrid", val_size=100, budgets=["100ms"], proxy="bn"
    )
    n_obs = len(hyb.lut.observations)
    first = hyb.evaluate([0.2] * 4)  # empty Pareto set: measured live, and the predictor learns from it
    assert first.live_latency_ms is not None
    assert len(hyb.lut.observations) >= n_obs  # (deduplicated when this graph was already observed)
    # A policy dominated by what was seen (lower accuracy, higher latency) within budget: LUT only.
    hyb._points = [(1.0, 1e-6)] * (hyb.hybrid_k + 1)
    dominated = hyb.evaluate([0.1] * 4)
    assert dominated.live_latency_ms is None and dominated.latency_kind == "lut"
    # Over every budget by the LUT: never measured live.
    hyb.budgets_ms = [1e-9]
    hyb._points = []
    assert hyb.evaluate([0.05] * 4).live_latency_ms is None
    forced = hyb.evaluate([0.05] * 4, live=True)
    assert forced.live_latency_ms is not None


def test_hybrid_measures_live_a_near_miss_that_beats_everything_within_the_budget() -> None:
    """A LUT error of a few tens of percent must not hide the best policy: a policy the LUT puts a
    little over a budget, more accurate than every policy within it, is measured live."""
    hyb = PolicyEvaluator(
        "digits-cnn", dataset="digits", device="sim-cpu", latency_source="hybrid", val_size=100, budgets=["100ms"], proxy="bn"
    )
    ratios = [0.3] * 4
    lut = hyb.predict_latency(ratios)  # in the dense reference's frame, as the budgets are
    hyb.budgets_ms = [lut / (1 + hyb.hybrid_margin / 2)]  # over the budget by half the margin
    hyb._points = [(0.0, 1e-6)]  # within the budget, less accurate than anything
    near = hyb.evaluate(ratios)
    assert near.live_latency_ms is not None and near.latency_kind == "live"
    rule = hyb._wants_live
    lut_frame = lut / hyb.lut_scale
    hyb._points = [(1.0, 1e-6)]  # something within the budget is more accurate: no live run
    assert not rule(0.9, lut_frame)
    hyb._points = [(0.5, 1e-6)]
    assert rule(0.9, lut_frame)
    hyb.budgets_ms = [lut / (1 + 2 * hyb.hybrid_margin)]  # over by twice the margin: the LUT decides
    assert not rule(0.9, lut_frame)
    with pytest.raises(EnvConfigError, match="hybrid_margin"):
        PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", hybrid_margin=1.5)


def test_a_live_ratio_far_from_the_luts_is_measured_again_and_the_median_kept() -> None:
    """One paired measurement in ten can land 20% off on a shared vCPU: one that disagrees with the
    LUT by more than that is measured twice more before it decides a budget."""
    import hwprofiler
    from envs.latency import SETTLE_REPEATS
    from hwprofiler.testing import tiny_cnn

    ev = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", latency_source="live", val_size=50, proxy="bn")
    lat = ev.latency
    agreeing = lat.measure_paired(tiny_cnn(c=6).SerializeToString())
    n_live = lat.n_live
    lat.measure_paired(tiny_cnn(c=10).SerializeToString(), expected_ratio=None)
    assert lat.n_live == n_live + 1 and lat.n_settled == 0
    graph = tiny_cnn(c=12).SerializeToString()
    truth = hwprofiler.measure_paired(graph, lat.reference_onnx, lat.device, cache=False).ratio  # not cached
    close = lat.measure_paired(graph, expected_ratio=truth)
    assert lat.n_live == n_live + 2 and lat.n_settled == 0 and close.ratio > 0  # agrees with the LUT: one run
    far = lat.measure_paired(tiny_cnn(c=14).SerializeToString(), expected_ratio=10 * agreeing.ratio)
    assert lat.n_live == n_live + 3 + SETTLE_REPEATS and lat.n_settled == 1
    assert far.ratio > 0 and ev.stats()["live_settled"] == 1
    r = ev.evaluate([0.5] * ev.n_groups)  # the evaluator hands its LUT ratio over
    assert r.latency_kind == "live" and lat.n_settled in (1, 2)


def test_live_times_cached_before_the_dense_reference_are_measured_again() -> None:
    """Budgets are fractions of the dense time an evaluator measures when it starts; a live time
    another run cached earlier (another load, another speed mode) must not be compared with it."""
    from hwprofiler.testing import tiny_cnn

    graph = tiny_cnn().SerializeToString()
    first = PolicyEvaluator("digits-cnn", dataset="digits", latency_source="live", val_size=50)
    first.latency.measure_paired(graph)
    assert first.latency.measure_paired(graph).cached  # measured since its reference: reused
    second = PolicyEvaluator("digits-cnn", dataset="digits", latency_source="live", val_size=50)
    assert second.latency.measured_since > first.latency.measured_since
    assert not second.latency.measure_paired(graph).cached  # cached before the second's reference: measured again
    assert second.latency.measure_paired(graph).cached


def test_user_model_from_a_file() -> None:
    from hilprune.export import to_onnx_bytes
    from hwprofiler import kernels_from_onnx

    ev = PolicyEvaluator(USER_MODEL, dataset="digits", device="sim-cpu", val_size=100, proxy="bn")
    assert ev.spec.name == USER_MODEL and ev.n_groups >= 3
    assert ev.kmap_ok, "the kernel map should handle the concat (no slow fallback)"
    ratios = [0.5] * ev.n_groups
    r = ev.evaluate(ratios)
    assert 0.0 <= r.accuracy <= 1.0 and r.latency_ms > 0
    model = ev.surgeon.apply(ev.policy(ratios), count=False).model
    real = ev.predictor.predict(kernels_from_onnx(to_onnx_bytes(model, ev.input_shape)))
    assert ev.predict_latency(ratios) == pytest.approx(real * ev.lut_scale)
    assert r.lut_latency_ms == pytest.approx(real)
