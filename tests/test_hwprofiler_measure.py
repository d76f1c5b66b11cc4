"""Live measurement on the real onnxruntime, its cache, model checks and statistics."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwprofiler import InvalidModelError, KernelSpec, build_kernel_model, measure_onnx
from hwprofiler.cache import MeasurementCache
from hwprofiler.stats import kendall_tau, median_ci, median_rel_ci
from hwprofiler.testing import fast_device, tiny_cnn
from hwprofiler.validate import parse_model


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))


def conv(c: int) -> KernelSpec:
    return KernelSpec(op="conv", cin=c, cout=c, kernel=3, padding=1, h=32, w=32, activation="relu")


def test_four_times_the_channels_is_slower():
    dev = fast_device()
    small = measure_onnx(build_kernel_model(conv(16)), dev, cache=False)
    big = measure_onnx(build_kernel_model(conv(64)), dev, cache=False)
    assert small.n >= dev.policy.rounds * dev.policy.min_round_runs and small.rounds == dev.policy.rounds
    assert small.min_ms <= small.p10_ms <= small.median_ms <= small.p90_ms
    assert small.latency_ms == small.min_ms and small.estimator == "min"  # the device's estimator
    assert big.latency_ms > 2 * small.latency_ms, (small, big)


def test_second_measure_is_a_cache_hit(tmp_path):
    dev = fast_device()
    cache = MeasurementCache(tmp_path / "c")
    model = tiny_cnn()
    first = measure_onnx(model, dev, cache=cache, keep_samples=True)
    second = measure_onnx(model, dev, cache=cache, keep_samples=True)
    assert not first.cached and second.cached
    assert (cache.hits, second.latency_ms, second.samples) == (1, first.latency_ms, first.samples)
    files = list((tmp_path / "c").rglob("*.json"))
    assert len(files) == 1 and not list((tmp_path / "c").rglob("*.tmp"))
    other = measure_onnx(tiny_cnn(c=8), dev, cache=cache)  # other bytes: a miss
    assert not other.cached
    fresh = measure_onnx(model, dev, cache=cache, keep_samples=True, refresh=True)  # measured again, record replaced
    assert not fresh.cached and fresh.samples != first.samples
    assert measure_onnx(model, dev, cache=cache, keep_samples=True).samples == fresh.samples


@pytest.mark.parametrize("damage", ['{"latency_ms": 0.1, "estim', "[1, 2]", '{"estimator": "min", "median_ms": 1}', "\x00\xff"])
def test_a_damaged_cache_record_is_measured_again_and_named(tmp_path, caplog, damage):
    """A truncated or foreign record in the cache never stops a measurement: it counts as a miss,
    the warning names the file, and the new measurement replaces it."""
    dev = fast_device()
    cache = MeasurementCache(tmp_path / "c")
    measure_onnx(tiny_cnn(), dev, cache=cache)
    (path,) = (tmp_path / "c").rglob("*.json")
    path.write_bytes(damage.encode("latin-1"))
    again = measure_onnx(tiny_cnn(), dev, cache=cache)
    assert not again.cached and str(path) in caplog.text
    assert json.loads(path.read_text())["latency_ms"] == again.latency_ms
    assert measure_onnx(tiny_cnn(), dev, cache=cache).cached


def test_not_before_refreshes_only_older_records(tmp_path):
    """A search compares live times with a reference it measured at a moment: cached times from
    before that moment (another load or speed mode) are measured again, later ones are reused."""
    dev = fast_device()
    cache = MeasurementCache(tmp_path / "c")
    model = tiny_cnn()
    before = time.time()
    first = measure_onnx(model, dev, cache=cache, keep_samples=True)
    record = next((tmp_path / "c").rglob("*.json"))
    assert float(json.loads(record.read_text())["measured_at"]) >= before
    reused = measure_onnx(model, dev, cache=cache, keep_samples=True, not_before=before)
    assert reused.cached and reused.samples == first.samples
    later = time.time() + 1e-3
    again = measure_onnx(model, dev, cache=cache, keep_samples=True, not_before=later)
    assert not again.cached and again.samples != first.samples
    assert measure_onnx(model, dev, cache=cache, keep_samples=True, not_before=later).samples == again.samples
    # a record written before records carried a time counts as older than any moment
    data = json.loads(record.read_text())
    del data["measured_at"]
    record.write_text(json.dumps(data))
    assert measure_onnx(model, dev, cache=cache).cached
    assert not measure_onnx(model, dev, cache=cache, not_before=1.0).cached


def test_measurement_round_trips_through_dict():
    m = measure_onnx(build_kernel_model(conv(8)), fast_device(), cache=False, keep_samples=True)
    assert len(m.samples) == m.n and m.samples is not None
    again = type(m).from_dict(m.to_dict())
    assert again == m


def test_free_batch_dimension_takes_the_device_batch():
    model = tiny_cnn(c=8, c2=None)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert measure_onnx(model, fast_device(), cache=False).latency_ms > 0


def test_garbage_and_checker_failures_are_invalid_model_errors():
    with pytest.raises(InvalidModelError):
        parse_model(b"\x00\xffthis is not a model")
    with pytest.raises(InvalidModelError, match="empty"):
        parse_model(b"")
    bad = tiny_cnn()
    bad.graph.node[0].input[1] = "missing_weight"
    with pytest.raises(InvalidModelError, match="checker"):
        measure_onnx(bad, fast_device(), cache=False)


def _single_node_model(node: onnx.NodeProto, opsets: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def test_custom_domains_and_external_data_are_refused():
    custom = _single_node_model(
        helper.make_node("Evil", ["x"], ["y"], domain="my.ops"),
        [helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)],
    )
    with pytest.raises(InvalidModelError, match="domain 'my.ops'"):
        parse_model(custom.SerializeToString())
    model = tiny_cnn(c=8, c2=None)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../../etc/passwd")
    with pytest.raises(InvalidModelError, match="external data"):
        parse_model(model.SerializeToString())


def test_median_ci_matches_the_binomial_ranks():
    s = list(range(1, 101))  # n=100: the classic 95% ranks are 40 and 61
    assert median_ci(s) == (40.0, 61.0)
    assert math.isinf(median_rel_ci([1.0]))
    assert median_rel_ci([5.0] * 50) == 0.0


def test_kendall_tau_agrees_with_scipy_or_known_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30).round(1)
    y = (x + rng.normal(size=30)).round(1)
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    scipy_stats = pytest.importorskip("scipy.stats")
    assert kendall_tau(list(x), list(y)) == pytest.approx(scipy_stats.kendalltau(x, y)[0], abs=1e-12)


def test_rounds_and_window_shape_a_measurement():
    """Each round holds at least `min_round_runs` runs and `round_s` seconds of them."""
    from dataclasses import replace

    from hwprofiler.devices import MeasurePolicy
    from hwprofiler.measure import measure_local, model_bytes

    data = model_bytes(tiny_cnn(c=8, c2=None, hw=8))
    base = MeasurePolicy(warmup=2, rounds=2, round_s=0.0, min_round_runs=5)
    dev = fast_device()
    quick = measure_local(data, dev, base)
    assert (quick.n, quick.rounds) == (10, 2)
    held = measure_local(data, dev, replace(base, round_s=0.05))
    assert sum(held.samples) >= 2 * 0.05 * 1e3 and held.n > quick.n  # ms of timed runs fill both windows
    many = measure_local(data, dev, replace(base, rounds=4))
    assert many.rounds == 4 and many.n == 20 and len(many.samples) == many.n


def test_records_of_another_estimator_are_never_mixed_in(tmp_path):
    from dataclasses import replace

    dev = fast_device()
    cache = MeasurementCache(tmp_path / "c")
    model = tiny_cnn(c=8, c2=None)
    first = measure_onnx(model, dev, cache=cache)
    assert measure_onnx(model, dev, cache=cache).cached
    median_policy = replace(dev.policy, estimator="median")
    other = measure_onnx(model, dev, cache=cache, policy=median_policy)
    assert not other.cached and other.estimator == "median" and first.estimator == "min"


def test_the_measurement_policy_is_part_of_the_fingerprint():
    from dataclasses import replace

    from hwprofiler import fingerprint_id

    dev = fast_device()
    assert fingerprint_id(dev) != fingerprint_id(replace(dev, policy=replace(dev.policy, round_s=0.5)))
    assert fingerprint_id(dev) != fingerprint_id(replace(dev, policy=replace(dev.policy, estimator="median")))


def test_the_estimator_ignores_additive_bursts():
    """Noise on a shared host only adds time: bursts on a third of the runs, and a slow round,
    leave the minimum where it was, while the median moves."""
    from hwprofiler.stats import estimate

    rng = np.random.default_rng(0)
    base = 1.0
    quiet = [[base + 0.002 * i for i in range(20)] for _ in range(5)]
    noisy = [list(r) for r in quiet]
    for r in noisy:
        for i in rng.choice(len(r), size=7, replace=False):
            r[i] += float(rng.exponential(0.8))
    noisy[2] = [x * 1.5 for x in noisy[2]]  # a slow speed mode for one whole round
    assert estimate(noisy, "min") == estimate(quiet, "min") == base
    assert estimate(noisy, "round_min_median") == estimate(quiet, "round_min_median")
    assert estimate(noisy, "median") > 1.01 * estimate(quiet, "median")  # the median moves
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate(quiet, "mean")


def test_pairs_alternate_a_b_b_a():
    from hwprofiler.measure import abba_order

    assert abba_order(3) == [0, 1, 1, 0, 0, 1]
    order = abba_order(4)
    assert order.count(0) == order.count(1) == 4
    # as many early as late slots: the mean position of both models is the same
    assert sum(i for i, w in enumerate(order) if w == 0) == sum(i for i, w in enumerate(order) if w == 1)


def test_a_paired_measurement_on_onnxruntime():
    from dataclasses import replace

    from hwprofiler import measure_paired
    from hwprofiler.measure import model_bytes

    dev = fast_device()
    big, small = model_bytes(build_kernel_model(conv(64))), model_bytes(build_kernel_model(conv(16)))
    pair = measure_paired(big, small, replace(dev, policy=replace(dev.policy, rounds=4)), cache=False)
    assert pair.model.rounds == pair.reference.rounds == 4 and len(pair.round_ratios) == 4
    assert pair.ratio == pytest.approx(pair.model.latency_ms / pair.reference.latency_ms)
    assert pair.ratio > 2 and min(pair.round_ratios) > 1.5
    again = type(pair).from_dict(pair.to_dict())
    assert again.ratio == pair.ratio and again.round_ratios == pair.round_ratios
