"""The simulated device: a deterministic CPU-like cost model behind the real measuring, LUT,
predictor, cache and fingerprint code, identical on every machine."""

from __future__ import annotations

from dataclasses import replace

import pytest

import hwprofiler
from hwprofiler import LUT, KernelSpec, Predictor, build_kernel_model, kernels_from_onnx, load_device, measure_onnx
from hwprofiler.cache import MeasurementCache
from hwprofiler.measure import measure_local, measure_pair_local, model_bytes
from hwprofiler.runtimes import simulated
from hwprofiler.runtimes.simulated import SimParams, blocked, graph_us, kernel_us
from hwprofiler.testing import tiny_cnn


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))


def sim(**options) -> hwprofiler.DeviceSpec:
    base = load_device("sim-cpu")
    return replace(base, runtime_options=base.runtime_options | options)


def conv(c: int, cin: int | None = None) -> KernelSpec:
    return KernelSpec(op="conv", cin=cin or c, cout=c, kernel=3, padding=1, h=16, w=16, activation="relu")


def test_measuring_is_deterministic_and_prices_the_graph():
    dev = load_device("sim-cpu")
    model = tiny_cnn()
    a = measure_onnx(model, dev, cache=False)
    b = measure_onnx(model, dev, cache=False)
    assert a.latency_ms == b.latency_ms == a.median_ms == a.min_ms  # no noise: every run the same
    expected = graph_us(kernels_from_onnx(model), SimParams(**dev.runtime_options)) / 1e3
    assert a.latency_ms == pytest.approx(expected, rel=1e-12)


def test_channels_off_the_block_are_slower_than_more_channels_on_it():
    p = SimParams()
    assert blocked(conv(32), p.block) and not blocked(conv(31), p.block)
    assert kernel_us(conv(31), p) > kernel_us(conv(32), p)  # fewer MACs, slower path
    dense = measure_onnx(build_kernel_model(conv(32)), "sim-cpu", cache=False)
    odd = measure_onnx(build_kernel_model(conv(23)), "sim-cpu", cache=False)
    aligned = measure_onnx(build_kernel_model(conv(16)), "sim-cpu", cache=False)
    assert odd.latency_ms > dense.latency_ms > aligned.latency_ms


def test_the_fingerprint_names_the_cost_model_not_the_host():
    fp = hwprofiler.fingerprint(load_device("sim-cpu"))
    assert fp["runtime"] == "simulated" and "cpu_model" not in fp and "isa" not in fp
    assert hwprofiler.fingerprint_id(sim(gmacs=99.0)) != hwprofiler.fingerprint_id(load_device("sim-cpu"))


def test_seeded_noise_adds_time_and_repeats_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "from dataclasses import replace\n"
        "import hwprofiler as hp\n"
        "from hwprofiler.testing import tiny_cnn\n"
        "d = hp.load_device('sim-cpu')\n"
        "d = replace(d, runtime_options=d.runtime_options | {'noise': 0.3, 'seed': 5})\n"
        "print([hp.measure_onnx(tiny_cnn(), d, cache=False, keep_samples=True).samples[:4] for _ in range(2)])\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]  # the same seed and order of runs: the same samples
    noisy = measure_onnx(tiny_cnn(), sim(noise=0.3, seed=5), cache=False, keep_samples=True)
    quiet = measure_onnx(tiny_cnn(), load_device("sim-cpu"), cache=False)
    assert min(noisy.samples) >= quiet.latency_ms and max(noisy.samples) > quiet.latency_ms  # noise only adds
    assert noisy.median_ms > noisy.latency_ms == noisy.min_ms


def test_paired_ratios_cancel_speed_modes(monkeypatch):
    """With drift (speed modes), two models measured apart can land in different modes; measured
    interleaved, each window pair sees the same mode and the ratio is the true one."""
    # Speed modes follow the process's simulated clock, which earlier tests have advanced by an
    # amount that depends on which ran: start it at a fixed time so this test sees fixed modes.
    monkeypatch.setattr(simulated._CLOCK, "s", 0.0)
    dev = sim(drift=1.5, drift_period_s=0.01)
    a, b = model_bytes(tiny_cnn(c=32)), model_bytes(tiny_cnn(c=16))
    true_ratio = measure_onnx(a, "sim-cpu", cache=False).latency_ms / measure_onnx(b, "sim-cpu", cache=False).latency_ms
    policy = replace(dev.policy, rounds=8, min_round_runs=2)
    pair = measure_pair_local(a, b, dev, policy)
    assert len(pair.round_ratios) == 8
    within = [abs(r / true_ratio - 1) < 1e-9 for r in pair.round_ratios]
    assert sum(within) >= 6  # only a window pair split by a mode change is off
    apart = [
        # b's warm-up runs span more than one drift period, so a and b are timed in different modes
        measure_local(a, dev, policy).latency_ms / measure_local(b, dev, replace(policy, warmup=400)).latency_ms
        for _ in range(3)
    ]
    assert max(abs(r / true_ratio - 1) for r in apart) > 1e-6  # apart, the modes differ


def test_lut_predictor_and_cache_treat_it_like_any_device(tmp_path):
    dev = load_device("sim-cpu")
    lut = LUT(dev, tmp_path / "lut.json")
    models = [tiny_cnn(c=c, c2=c2) for c, c2 in [(16, 32), (8, 16), (24, 40), (12, 20), (32, 64)]]
    pred = Predictor(lut)
    for m in models[:4]:
        pred.observe_model(m, save=False)
    assert lut.measured > 0 and len(lut.observations) == 4
    live = measure_onnx(models[4], dev, cache=False).latency_ms
    assert pred.predict_model(models[4]) == pytest.approx(live, rel=0.25)
    cache = MeasurementCache(tmp_path / "c")
    first = measure_onnx(models[0], dev, cache=cache)
    assert measure_onnx(models[0], dev, cache=cache).cached and not first.cached
    path = lut.save()
    assert LUT(dev, path).entries.keys() == lut.entries.keys()


def test_an_unpriceable_graph_is_one_clear_error():
    import onnx
    from onnx import TensorProto, helper

    out = helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 4])
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [out])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "else", [], [out])
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    with pytest.raises(hwprofiler.DeviceError, match="simulated device cannot price.*branch"):
        measure_onnx(model, "sim-cpu", cache=False)
