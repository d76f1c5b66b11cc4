"""Predictor: LUT sum + a correction learned on the device vs live latency, the FLOPs baseline,
fidelity metrics, and the layouts read from the runtime."""

from __future__ import annotations

import math

import pytest

from hwprofiler import LUT, Predictor, fidelity, kernels_from_onnx, measure_onnx
from hwprofiler.predictor import Correction, FlopsPredictor, fit_correction
from hwprofiler.testing import fast_device, tiny_cnn

# (c, c2, hw): "policies" of one small network, from 8 to 64 channels, odd widths included.
VARIANTS = [(8, 16, 16), (12, 24, 16), (16, 32, 16), (24, 40, 16), (32, 64, 16), (20, 36, 24), (48, 64, 24), (8, 20, 32)]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))


def test_predictor_tracks_live_latency_on_unseen_policies(tmp_path):
    dev = fast_device()
    lut = LUT(dev, tmp_path / "lut.json")
    pred = Predictor(lut)
    test = []
    for i, (c, c2, hw) in enumerate(VARIANTS):
        model = tiny_cnn(c=c, c2=c2, hw=hw)
        if i % 2 == 0:
            assert pred.observe_model(model, save=False).latency_ms > 0  # fit on these policies
        else:
            kernels = kernels_from_onnx(model)
            lut.fill(kernels, progress=False, save=False)
            test.append((kernels, measure_onnx(model, dev, cache=False).latency_ms))
    assert len(lut.observations) == len(VARIANTS) - len(test)
    live = [y for _, y in test]
    result = fidelity([pred.predict(k) for k, _ in test], live)
    baseline = fidelity([pred.flops_baseline().predict(k) for k, _ in test], live)
    info = f"predictor {result}, flops {baseline}, coefficients {pred.coefficients}"
    print(info)
    assert result["mape"] < 0.5, info  # loose: the test host is shared and noisy
    assert result["kendall_tau"] > 0.3, info
    lut.save()
    reopened = Predictor(LUT.load(tmp_path / "lut.json", dev))  # the correction persists with the LUT
    assert reopened.coefficients == pytest.approx(pred.coefficients)


def point(class_ms: dict[str, float], n: int, w: float, tm: float, truth: dict[str, float]) -> dict:
    live = sum(truth[f"scale[{c}]"] * v for c, v in class_ms.items())
    live += (
        truth["b_ms_per_kernel"] * n + truth["c_ms"] + truth["d_ms_per_weight_mb"] * w + truth["f_ms_per_transition_melem"] * tm
    )
    return {"class_ms": class_ms, "n_kernels": n, "weight_mb": w, "transition_melems": tm, "live_ms": live}


TRUTH = {
    "scale[conv:blocked]": 0.8,
    "scale[conv:plain]": 1.3,
    "scale[pool:blocked]": 0.6,
    "b_ms_per_kernel": -0.01,
    "c_ms": 0.05,
    "d_ms_per_weight_mb": 0.2,
    "f_ms_per_transition_melem": 2.0,
}
SHAPES = [
    ({"conv:blocked": 1.0, "conv:plain": 0.2, "pool:blocked": 0.1}, 5, 0.1, 0.01),
    ({"conv:blocked": 2.0, "conv:plain": 1.5, "pool:blocked": 0.05}, 9, 3.0, 0.2),
    ({"conv:blocked": 4.0, "pool:blocked": 0.3}, 7, 0.5, 0.0),
    ({"conv:blocked": 8.0, "conv:plain": 3.0, "pool:blocked": 0.2}, 20, 9.0, 0.05),
    ({"conv:blocked": 0.5, "conv:plain": 0.5, "pool:blocked": 0.01}, 3, 0.0, 0.3),
    ({"conv:blocked": 3.0, "conv:plain": 1.0, "pool:blocked": 0.4}, 30, 1.0, 0.02),
    ({"conv:blocked": 5.0, "conv:plain": 4.0, "pool:blocked": 0.2}, 12, 2.0, 0.1),
    ({"conv:blocked": 2.5, "conv:plain": 0.3, "pool:blocked": 0.7}, 15, 4.0, 0.4),
    ({"conv:blocked": 1.5, "conv:plain": 2.5, "pool:blocked": 0.3}, 11, 0.7, 0.15),
]


def test_the_correction_recovers_known_coefficients():
    assert (
        fit_correction([]).predict({"class_ms": {"conv:blocked": 2.0}, "n_kernels": 3, "weight_mb": 1.0, "transition_melems": 0})
        == 2.0
    )
    points = [point(*shape, TRUTH) for shape in SHAPES]
    fitted = fit_correction(points, prior_weight=0.0).to_dict()
    assert fitted["model"] == "per_class"  # the classes really differ: leave-one-out prefers a scale each
    assert {k: fitted[k] for k in TRUTH} == pytest.approx(TRUTH, abs=1e-9)
    same = {**TRUTH, "scale[conv:plain]": 0.8, "scale[pool:blocked]": 0.8}
    noisy = [
        p | {"live_ms": p["live_ms"] * (1 + 0.03 * ((i * 7919) % 5 - 2))} for i, p in enumerate(point(*sh, same) for sh in SHAPES)
    ]
    assert fit_correction(noisy).to_dict()["model"] == "one_scale"  # one scale fits as well: the simpler model
    one = fit_correction(points[:1]).to_dict()  # one point: stays near the prior instead of blowing up
    assert all(0.5 < one[k] < 1.5 for k in one if k.startswith("scale["))
    faster_with_weights = [{**p, "live_ms": p["live_ms"] - 0.3 * p["weight_mb"]} for p in points]
    assert fit_correction(faster_with_weights).to_dict()["d_ms_per_weight_mb"] == pytest.approx(0.0, abs=1e-8)  # d < 0 refused
    unseen = {"class_ms": {"conv:blocked": 1.0, "linear:any": 0.5}, "n_kernels": 2, "weight_mb": 0.0, "transition_melems": 0.0}
    c = fit_correction(points, prior_weight=0.0)
    assert c.predict(unseen) == pytest.approx(0.8 * 1.0 + 0.5 - 0.02 + 0.05)  # an unseen class keeps its LUT time
    assert isinstance(Correction.prior(), Correction)


def test_kernel_costs_add_up_to_the_prediction_less_its_network_terms():
    """One kernel's cost (its class's scale, the per-kernel and per-weight terms) is what lets a
    layer's fp32 and INT8 kernels be compared: the costs of a network's kernels, plus the
    intercept and the reorders, are its prediction."""
    c = fit_correction([point(*shape, TRUTH) for shape in SHAPES], prior_weight=0.0)
    kernels = [("conv:blocked", 1.5, 0.4), ("conv:plain", 0.7, 0.2), ("pool:blocked", 0.2, 0.0), ("linear:any", 0.3, 0.1)]
    costs = [c.kernel_cost(cls, ms, mb) for cls, ms, mb in kernels]
    assert costs[0] == pytest.approx(0.8 * 1.5 - 0.01 + 0.2 * 0.4)
    assert costs[3] == pytest.approx(0.3 - 0.01 + 0.2 * 0.1)  # a class the fit never saw keeps its LUT time
    f = {"class_ms": {}, "n_kernels": len(kernels), "weight_mb": sum(k[2] for k in kernels), "transition_melems": 0.25}
    for cls, ms, _ in kernels:
        f["class_ms"][cls] = f["class_ms"].get(cls, 0.0) + ms
    assert sum(costs) + TRUTH["c_ms"] + TRUTH["f_ms_per_transition_melem"] * 0.25 == pytest.approx(c.predict(f))


def test_the_macs_term_is_fitted_where_the_runs_need_it_and_only_there():
    """Part of a network's time that its kernel times miss but its MACs carry is fitted as
    g ms per GMAC, and the model is named for it; MACs that explain nothing get no weight; runs
    that do not know their MACs are fitted without the term."""
    macs = [0.3e9, 1.1e9, 0.2e9, 2.0e9, 0.9e9, 0.5e9, 1.6e9, 0.1e9, 1.3e9]  # not proportional to the class sums
    g = 0.04
    with_macs = [point(*sh, TRUTH) | {"macs": m} for sh, m in zip(SHAPES, macs)]
    for p, m in zip(with_macs, macs):
        p["live_ms"] += g * m / 1e9
    fitted = fit_correction(with_macs, prior_weight=0.0).to_dict()
    assert fitted["model"] == "per_class+macs"
    assert fitted["g_ms_per_gmac"] == pytest.approx(g, abs=1e-9)
    assert {k: fitted[k] for k in TRUTH} == pytest.approx(TRUTH, abs=1e-9)
    plain = [point(*sh, TRUTH) | {"macs": m} for sh, m in zip(SHAPES, macs)]
    assert fit_correction(plain, prior_weight=0.0).to_dict()["g_ms_per_gmac"] == pytest.approx(0.0, abs=1e-9)
    unknown = [{k: v for k, v in p.items() if k != "macs"} for p in with_macs]
    assert not fit_correction(unknown, prior_weight=0.0).to_dict()["model"].endswith("+macs")
    cheaper = [p | {"live_ms": p["live_ms"] - 0.05 * p["macs"] / 1e9} for p in plain]
    assert fit_correction(cheaper).to_dict()["g_ms_per_gmac"] >= 0.0  # more MACs never make a network faster
    c = fit_correction(with_macs, prior_weight=0.0)
    assert c.kernel_cost("conv:blocked", 1.5, 0.4, 0.5e9) == pytest.approx(0.8 * 1.5 - 0.01 + 0.2 * 0.4 + g * 0.5)


def test_flops_baseline_and_fidelity_metrics():
    points = [{"macs": m, "live_ms": 2e-6 * m} for m in (1e5, 3e5, 9e5)]
    assert FlopsPredictor.fit(points).ms_per_mac == pytest.approx(2e-6)
    f = fidelity([1.0, 2.2, 2.9, 5.0], [1.0, 2.0, 3.0, 4.0])
    assert f["n"] == 4 and f["within_10pct"] == 0.75
    assert f["mape"] == pytest.approx((0 + 0.1 + 1 / 30 + 0.25) / 4)
    assert f["kendall_tau"] == 1.0
    assert math.isnan(fidelity([1.0], [1.0])["kendall_tau"])
    with pytest.raises(ValueError):
        fidelity([1.0], [1.0, 2.0])


def test_fit_keeps_a_nonnegative_intercept_and_small_networks_positive() -> None:
    """One observation where live < kernel sum used to give c < 0 and ~0 ms for small networks."""
    points = [
        {"class_ms": {"conv:blocked": 0.30}, "n_kernels": 7, "live_ms": 0.20, "weight_mb": 0.4, "transition_melems": 0.0},
        {"class_ms": {"conv:blocked": 0.60}, "n_kernels": 7, "live_ms": 0.45, "weight_mb": 0.9, "transition_melems": 0.0},
    ]
    f = fit_correction(points).to_dict()
    # Unconstrained, these points fit c < 0 and d < 0 (checked): the signs must be enforced.
    assert f["c_ms"] >= 0 and f["d_ms_per_weight_mb"] >= 0 and f["scale[all]"] > 0  # two runs: the simpler model


def test_layouts_are_read_from_onnxruntime_not_assumed(tmp_path) -> None:
    """Which convs run in the NCHWc layout is what onnxruntime's optimizer does on this CPU: the
    LUT records it per kernel, and the predictor prices layout switches from it."""
    import onnx

    from hwprofiler import KernelSpec, build_kernel_model
    from hwprofiler.predictor import transition_melems
    from hwprofiler.runtimes.ort import NCHWC_DOMAIN, nchwc_block, optimized_graph

    dev = fast_device()
    block = nchwc_block(dev)
    assert block in (4, 8, 16, 32, 64)
    lut = LUT(dev, tmp_path / "lut.json")
    pool = lambda c: KernelSpec(op="maxpool", cin=c, cout=c, kernel=2, stride=2, h=8, w=8)  # noqa: E731
    assert lut.layout(pool(block)) == "blocked" and lut.layout(pool(block + block // 2 + 1)) == "plain"
    convs = [KernelSpec(op="conv", cin=c, cout=c, kernel=3, padding=1, h=8, w=8) for c in (block, 2 * block, 23, 31)]
    for k in convs:  # the recorded layout is the optimized graph's
        graph = optimized_graph(build_kernel_model(k).SerializeToString(), dev)
        nchwc = any(n.domain == NCHWC_DOMAIN and n.op_type == "Conv" for n in graph.node)
        assert lut.layout(k) == ("blocked" if nchwc else "plain"), k
    assert isinstance(onnx.__version__, str)
    layouts = [lut.layout(k) for k in convs]
    expected = (
        sum(convs[i].cout * 8 * 8 for i in range(len(convs) - 1) if layouts[i] != layouts[i + 1]) / 1e6
    )  # each switch reorders the tensor the earlier kernel wrote
    assert transition_melems(convs, layouts) == pytest.approx(expected)


def test_observations_refitted_once_give_the_correction_of_refitting_after_each(tmp_path):
    """hilprune.calibrate defers the refit to the end of its runs (the O(n^2) leave-one-out fits)."""
    dev = fast_device()
    nets = [kernels_from_onnx(tiny_cnn(c=c, c2=c2, hw=hw)) for c, c2, hw in VARIANTS]
    table = LUT(dev, tmp_path / "lut.json")
    for kernels in nets:
        table.fill(kernels, progress=False, save=False)
    table.save()  # both predictors price from the same kernel times
    each, once = Predictor(LUT.load(tmp_path / "lut.json", dev)), Predictor(LUT.load(tmp_path / "lut.json", dev))
    for i, kernels in enumerate(nets):
        live = 1.2 * each.kernel_sum(kernels) + 0.01 * i  # the same made-up live time for both
        each.observe(kernels, live, save=False)
        once.observe(kernels, live, save=False, refit=False)
    assert once.correction.n == 0 and each.correction.n == len(nets)  # deferred: not refitted yet
    once.refit()
    assert once.coefficients == pytest.approx(each.coefficients)
