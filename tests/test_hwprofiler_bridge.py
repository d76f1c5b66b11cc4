"""hwprofiler.bridge: INT8 graphs timed against the dense INT8 graph and carried over to the fp32
reference by a conversion taken where the machine ran fastest."""

from __future__ import annotations

import math

import pytest

import hwprofiler.bridge as bridge_mod
from hwprofiler import Measurement, PairedMeasurement, measure_paired
from hwprofiler.bridge import FIRST_PAIRS, PrecisionBridge
from hwprofiler.quantization import Scheme, quantize_structure
from hwprofiler.testing import fast_device, tiny_cnn


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))


def _pair(int8_ms: float, fp32_ms: float) -> PairedMeasurement:
    def m(ms: float) -> Measurement:
        return Measurement(latency_ms=ms, estimator="min", median_ms=ms, min_ms=ms, p10_ms=ms, p90_ms=ms, n=1)

    return PairedMeasurement(model=m(int8_ms), reference=m(fp32_ms), ratio=int8_ms / fp32_ms)


def test_the_conversion_is_each_dense_graphs_fastest_time_over_the_pairs():
    """Pairs as measured on an Ice Lake vCPU (paired_precision_icl): a slow speed slowed INT8 1.65x
    and fp32 1.35x, and could hold for one side of a pair only. Here no pair caught both graphs
    fast, yet each graph's fast time shows in some pair: their ratio is what INT8 buys undisturbed."""
    b = PrecisionBridge(b"fp32", b"int8", fast_device())
    b.conversions = [_pair(0.52, 0.64), _pair(0.54, 0.86), _pair(0.315, 0.89), _pair(0.52, 0.70)]
    assert b.conversion() == pytest.approx(0.315 / 0.64)
    assert b.summary()["int8_conversion_ratios"] == [pytest.approx(r, abs=1e-4) for r in (0.8125, 0.6279, 0.3539, 0.7429)]


def test_an_int8_graph_is_paired_with_the_dense_int8_graph_and_converted(monkeypatch):
    dev = fast_device()
    scheme = Scheme("qdq", "u8")
    fp32 = tiny_cnn(c=16).SerializeToString()
    dense_q = quantize_structure(fp32, scheme)
    pruned_q = quantize_structure(tiny_cnn(c=8).SerializeToString(), scheme)
    b = PrecisionBridge.of(fp32, dense_q, dev)
    assert b.summary() == {"int8_conversion": None, "int8_conversion_ratios": [], "int8_reference_retries": 0}

    got = b.measure(pruned_q)
    assert len(b.conversions) == FIRST_PAIRS  # the first measurement takes the first conversion pairs
    assert got.conversion == b.conversion() and got.ratio == pytest.approx(got.pair.ratio * got.conversion)
    assert math.isfinite(got.ratio) and got.ratio > 0 and not got.cached
    again = measure_paired(pruned_q, dense_q, dev)  # the graph's own pair was with the dense INT8 graph (the last
    assert again.cached and again.ratio == got.pair.ratio  # one taken, when its reference ran slow at first)

    b.measure(pruned_q)  # within SPACING_S: no new conversion pair
    assert len(b.conversions) == FIRST_PAIRS
    monkeypatch.setattr(bridge_mod, "SPACING_S", 0.0)
    assert b.measure(pruned_q).cached
    assert len(b.conversions) == FIRST_PAIRS + 1  # later ones, spread over the run, may find a faster mode
    monkeypatch.setattr(bridge_mod, "MAX_PAIRS", FIRST_PAIRS + 1)
    b.measure(pruned_q, cache=False)
    assert len(b.conversions) == FIRST_PAIRS + 1  # ... up to MAX_PAIRS


def test_a_pair_whose_reference_ran_slow_is_measured_again(monkeypatch):
    """The slow speed can hold for the reference's session alone: the graph's ratio then reads 0.6
    of the truth (Ice Lake vCPU, resnet20 INT8 against itself: 0.59 and 0.63 in 2 of 8 pairs)."""
    conversions = [_pair(0.33, 0.64)] * FIRST_PAIRS  # dense INT8 / dense fp32
    script = conversions + [_pair(0.33, 0.55), _pair(0.33, 0.53), _pair(0.33, 0.34)]  # the graph / dense INT8
    calls: list[bool] = []

    def scripted(model, reference, device, *, cache=True, not_before=None):
        calls.append(not_before is not None)  # a retry is measured now
        return script[len(calls) - 1]

    monkeypatch.setattr(bridge_mod, "measure_paired", scripted)
    b = PrecisionBridge(b"fp32", b"int8", fast_device())
    got = b.measure(b"graph")
    assert len(calls) == FIRST_PAIRS + 3 and b.retries == 2  # 0.55 and 0.53 are over 1.3 x 0.33
    assert calls[FIRST_PAIRS:] == [False, True, True]  # the retries are measured now (and replace the cached pair)
    assert got.pair.reference.latency_ms == 0.34 and got.ratio == pytest.approx(0.33 / 0.34 * 0.33 / 0.64)
    assert b.summary()["int8_reference_retries"] == 2
    script.append(_pair(0.33, 0.60))
    monkeypatch.setattr(bridge_mod, "RETRIES", 0)
    assert b.measure(b"graph").pair.reference.latency_ms == 0.60 and b.retries == 2  # no retries left to take
