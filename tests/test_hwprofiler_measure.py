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
    assert small.n >= dev.policy.min_repeats or small.stop_reason == "time_cap"
    assert small.p10_ms <= small.median_ms <= small.p90_ms
    assert big.median_ms > 2 * small.median_ms, (small, big)


def test_second_measure_is_a_cache_hit(tmp_path):
    dev = fast_device()
    cache = MeasurementCache(tmp_path / "c")
    model = tiny_cnn()
    first = measure_onnx(model, dev, cache=cache, keep_samples=True)
    t0 = time.perf_counter()
    second = measure_onnx(model, dev, cache=cache, keep_samples=True)
    elapsed = time.perf_counter() - t0
    assert not first.cached and second.cached
    assert (cache.hits, second.median_ms, second.samples) == (1, first.median_ms, first.samples)
    assert elapsed < dev.policy.time_cap_s / 2  # nothing was run
    files = list((tmp_path / "c").rglob("*.json"))
    assert len(files) == 1 and not list((tmp_path / "c").rglob("*.tmp"))
    other = measure_onnx(tiny_cnn(c=8), dev, cache=cache)  # other bytes: a miss
    assert not other.cached
    fresh = measure_onnx(model, dev, cache=cache, keep_samples=True, refresh=True)  # measured again, record replaced
    assert not fresh.cached and fresh.samples != first.samples
    assert measure_onnx(model, dev, cache=cache, keep_samples=True).samples == fresh.samples


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
    assert measure_onnx(model, fast_device(), cache=False).median_ms > 0


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


def test_min_time_and_sessions_shape_a_measurement():
    """`min_time_s` keeps timing past an early CI; `sessions` times fresh sessions and pools their runs."""
    from dataclasses import replace

    from hwprofiler.devices import MeasurePolicy
    from hwprofiler.measure import measure_local, model_bytes

    data = model_bytes(tiny_cnn(c=8, c2=None, hw=8))
    base = MeasurePolicy(warmup=2, min_repeats=5, max_repeats=100_000, target_rel_ci=0.5, time_cap_s=2.0)
    dev = fast_device()
    quick = measure_local(data, dev, base)
    assert quick.n < 50  # a loose CI target stops right after min_repeats
    held = measure_local(data, dev, replace(base, min_time_s=0.2))
    assert sum(held.samples) >= 0.2 * 1e3 * 0.8 and held.n > quick.n  # ms of timed runs span the minimum
    pooled = measure_local(data, dev, replace(base, sessions=3))
    assert pooled.n >= 3 * base.min_repeats and len(pooled.samples) == pooled.n
    assert min(pooled.samples) <= pooled.median_ms <= max(pooled.samples)


def test_the_measurement_policy_is_part_of_the_fingerprint():
    from dataclasses import replace

    from hwprofiler import fingerprint_id

    dev = fast_device()
    assert fingerprint_id(dev) != fingerprint_id(replace(dev, policy=replace(dev.policy, min_time_s=0.5)))
